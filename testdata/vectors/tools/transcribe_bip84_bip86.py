#!/usr/bin/env python3
"""Transcribes the test vectors of BIP-84 and BIP-86 into bip84_bip86_vectors.json.

Usage: transcribe_bip84_bip86.py BIPS_GIT_DIR > bip84_bip86_vectors.json

Reads `bip-0084.mediawiki` and `bip-0086.mediawiki` at the repository's HEAD (git show), takes
every `name = value` line of the "Test vectors" section, and groups them under the `//` comment
that precedes them. No value is typed by hand; the source commit and git blobs are recorded.
"""
import json
import re
import subprocess
import sys

def git(repo, *args):
    return subprocess.run(["git", "--git-dir", repo, *args], check=True,
                          capture_output=True, text=True).stdout.strip()

def section(text):
    start = text.index("==Test vectors==")
    end = text.index("</pre>", start)
    return text[start:end]

def parse(text):
    groups, current = [], {"title": "root"}
    for line in section(text).splitlines():
        line = line.strip()
        if line.startswith("//"):
            groups.append(current)
            current = {"title": line[2:].strip()}
            path = re.search(r"m(/[0-9]+'?)+", line)
            if path:
                current["path"] = path.group(0)
        elif "=" in line and not line.startswith("=="):
            name, value = (part.strip() for part in line.split("=", 1))
            current[name] = value
    groups.append(current)
    return groups

def main():
    repo = sys.argv[1]
    head = git(repo, "rev-parse", "HEAD")
    out = {"description": "BIP-84 and BIP-86 test vectors, transcribed by "
                          "testdata/vectors/tools/transcribe_bip84_bip86.py.", "sources": {}}
    for bip, path in (("bip84", "bip-0084.mediawiki"), ("bip86", "bip-0086.mediawiki")):
        text = git(repo, "show", f"{head}:{path}")
        out["sources"][bip] = {
            "repository": "bitcoin/bips", "path": path, "commit": head,
            "git_blob": git(repo, "rev-parse", f"{head}:{path}"),
            "license": "BSD-2-Clause (the BIP text)",
        }
        out[bip] = parse(text)
    json.dump(out, sys.stdout, indent=1)
    print()

main()
