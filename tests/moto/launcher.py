"""Start moto's server with two Direct Connect wire-format bugs fixed.

Stock moto 5.2.5 sends `hasLogicalRedundancy` as a JSON boolean (the API has a string enum
`unknown|yes|no`) and `loaIssueTime` as "YYYY-mm-dd HH:MM:SS" (the API has epoch seconds).
The AWS SDK for Rust then rejects every response that carries a connection or LAG. This
launcher rewrites those two fields in moto's serializers and starts moto's server unchanged
otherwise, so the operator's real SDK client can use moto as a protocol peer.

Usage: python launcher.py -H 127.0.0.1 -p PORT   (the arguments of `python -m moto.server`)
"""

import sys
from datetime import datetime, timezone

from moto.directconnect import models


def _fix(item):
    redundancy = item.get("hasLogicalRedundancy")
    if isinstance(redundancy, bool):
        item["hasLogicalRedundancy"] = "yes" if redundancy else "no"
    issued = item.get("loaIssueTime")
    if isinstance(issued, str):
        try:
            parsed = datetime.strptime(issued, "%Y-%m-%d %H:%M:%S")
            item["loaIssueTime"] = parsed.replace(tzinfo=timezone.utc).timestamp()
        except ValueError:
            pass
    for member in item.get("connections") or []:
        _fix(member)
    return item


def _patch(cls):
    original = cls.to_dict

    def to_dict(self, *args, **kwargs):
        return _fix(original(self, *args, **kwargs))

    cls.to_dict = to_dict


_patch(models.Connection)
_patch(models.LAG)

if __name__ == "__main__":
    from moto.server import main

    main(sys.argv[1:])
