"""Prints the Helm chart's default render (without NOTES.txt) as one YAML stream, for
scripts/e2e. Usage: render.py --namespace NS [--name RELEASE]"""

import argparse
import pathlib

import helm_python as helm

CHART = pathlib.Path(__file__).resolve().parents[2] / "charts" / "dx-macsec-operator"

parser = argparse.ArgumentParser()
parser.add_argument("--namespace", required=True)
parser.add_argument("--name", default="dx-macsec-operator")
args = parser.parse_args()
with helm.Chart.load(str(CHART)) as chart:
    out = chart.render({}, name=args.name, namespace=args.namespace)
for path, text in sorted(out.items()):
    if not path.endswith("NOTES.txt") and text.strip():
        print("---")
        print(text)
