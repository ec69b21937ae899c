#!/usr/bin/env python3
"""Keeps a fuzz corpus small: from libFuzzer's merge control file (a
`-merge=1 -use_counters=0 -merge_control_file=CTL` run over corpus/<target>
and work/<target>), picks the files of corpus/<target> whose names are not
hashes (hand-written seeds, named crashes) and then, greedily, the inputs
that cover the most edges not yet covered, up to MAX files in all. Copies
the picked new inputs into the corpus and removes unpicked hash-named ones.

Usage: fuzz-fold.py CTL CORPUS_DIR [MAX]   (prints what it kept)
"""
import os
import re
import shutil
import sys

ctl, corpus = sys.argv[1], sys.argv[2]
limit = int(sys.argv[3]) if len(sys.argv) > 3 else 45
hashed = re.compile(r"^[0-9a-f]{40}$")

lines = open(ctl).read().splitlines()
n = int(lines[0])
paths = lines[2 : 2 + n]
cov = {}
for line in lines[2 + n :]:
    parts = line.split()
    if parts and parts[0] == "COV":
        cov[int(parts[1])] = set(parts[2:])

def size(i):
    return os.path.getsize(paths[i])

named = [i for i in range(n) if os.path.dirname(os.path.abspath(paths[i])) == os.path.abspath(corpus)
         and not hashed.match(os.path.basename(paths[i]))]
picked = list(named)
covered = set().union(*(cov.get(i, set()) for i in picked)) if picked else set()
seen_names = {os.path.basename(paths[i]) for i in picked}
while len(picked) < limit:
    best, gain = None, 0
    for i in range(n):
        g = len(cov.get(i, set()) - covered)
        if g > gain or (g == gain and g > 0 and best is not None and size(i) < size(best)):
            best, gain = i, g
    if best is None:
        break
    picked.append(best)
    covered |= cov[best]
keep = set()
for i in picked:
    name = os.path.basename(paths[i])
    if not hashed.match(name) or os.path.abspath(os.path.dirname(paths[i])) == os.path.abspath(corpus):
        keep.add(name)
    else:
        shutil.copy(paths[i], os.path.join(corpus, name))
        keep.add(name)
for f in os.listdir(corpus):
    if hashed.match(f) and f not in keep:
        os.remove(os.path.join(corpus, f))
total = set().union(*cov.values()) if cov else set()
print(f"{corpus}: {len(keep)} files, {sum(os.path.getsize(os.path.join(corpus, f)) for f in os.listdir(corpus))} bytes, "
      f"{len(covered)} of {len(total)} edges")
