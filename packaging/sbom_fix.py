#!/usr/bin/env python3
"""Makes CycloneDX documents reproducible: the generators stamp the clock's
time and a random serial number; this sets the time to the commit's
(SOURCE_DATE_EPOCH) and derives the serial number from the commit and the
document's name, so two builds of one commit give the same SBOM bytes."""

import json
import sys
import uuid
from datetime import datetime, timezone
from pathlib import Path


def main() -> None:
    commit, epoch, *files = sys.argv[1:]
    stamp = datetime.fromtimestamp(int(epoch), tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    for name in files:
        path = Path(name)
        doc = json.loads(path.read_text(encoding="utf-8"))
        doc["serialNumber"] = "urn:uuid:" + str(uuid.uuid5(uuid.NAMESPACE_URL, f"medtext:{commit}:{path.name}"))
        doc.setdefault("metadata", {})["timestamp"] = stamp
        path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
