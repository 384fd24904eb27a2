"""Prints the Helm chart's render (without NOTES.txt) as one YAML stream, for scripts/e2e.
Usage: render.py --namespace NS [--name RELEASE] [--values JSON] [--skip-kind KIND]..."""

import argparse
import json
import pathlib

import helm_python as helm

CHART = pathlib.Path(__file__).resolve().parents[2] / "charts" / "dx-macsec-operator"

parser = argparse.ArgumentParser()
parser.add_argument("--namespace", required=True)
parser.add_argument("--name", default="dx-macsec-operator")
parser.add_argument("--skip-kind", action="append", default=[], help="leave out objects of this kind")
parser.add_argument("--values", default="{}", help="chart values as JSON (default: the chart's own)")
args = parser.parse_args()
with helm.Chart.load(str(CHART)) as chart:
    out = chart.render(json.loads(args.values), name=args.name, namespace=args.namespace)
for path, text in sorted(out.items()):
    if path.endswith("NOTES.txt") or not text.strip():
        continue
    for doc in text.split("\n---"):
        if doc.strip() and not any(f"\nkind: {k}\n" in "\n" + doc + "\n" for k in args.skip_kind):
            print("---")
            print(doc.strip("-\n"))
