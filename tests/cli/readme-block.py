#!/usr/bin/env python3
"""Write the Nth ```c block (from 1) of README.md's section HEADING to OUT,
unchanged but for a first line naming where it came from, so that the
build compiles what the README shows.
Usage: readme-block.py README.md HEADING N OUT"""
import re
import sys

readme, heading, n, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
text = open(readme, encoding="utf-8").read()
start = text.index("\n## " + heading + "\n")
end = text.find("\n## ", start + 1)
section = text[start:end if end >= 0 else len(text)]
blocks = re.findall(r"\n```c\n(.*?)\n```", section, re.S)
if len(blocks) < n:
    sys.exit(f"{readme}: section '{heading}' has {len(blocks)} C blocks, not {n}")
with open(out, "w", encoding="utf-8") as f:
    f.write(f"/* C block {n} of the section '{heading}' of README.md. */\n")
    f.write(blocks[n - 1] + "\n")
