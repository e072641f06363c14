# SPDX-License-Identifier: MIT
"""The Debian package exactly as README's "Install" section builds it.

Shared by the system tests (test_package, test_nspawn).  install_section()
reads that section: the commands that build the package (its first sh block,
up to the `apt install` line), the package path the install line names, and
the lintian tags the README explains.  build() runs those commands, as they
are written, in a copy of the source tree and returns the .deb; a copy whose
files hash the same as the last one built reuses that package, so the two
tests build it once per change.
"""

import fcntl
import glob
import hashlib
import os
import re
import shutil
import subprocess

BUILD_TIMEOUT = 1200


class Error(Exception):
    pass


def source_dir():
    return os.environ.get("RINGECHO_SOURCE_DIR") or os.path.abspath(
        os.path.join(os.path.dirname(__file__), "..", ".."))


def install_section(src):
    """(build commands, package path as README names it, explained lintian tags)."""
    with open(os.path.join(src, "README.md")) as f:
        text = f.read()
    m = re.search(r"^## Install\n(.*?)(?=^## )", text, re.M | re.S)
    if not m:
        raise Error("README.md has no '## Install' section")
    section = m.group(1)
    block = re.search(r"^```sh\n(.*?)^```", section, re.M | re.S)
    if not block:
        raise Error("README's Install section has no ```sh block")
    lines = block.group(1).replace("\\\n", " ").splitlines()
    commands, deb = [], None
    for line in lines:
        if re.search(r"\bapt(-get)? install\b", line):
            m = re.search(r"\s(\./\S+\.deb)", line)
            deb = m and m.group(1)
            break
        commands.append(line)
    if not commands or not deb:
        raise Error(f"README's first sh block in Install has no build commands and "
                    f"`apt install ./....deb` line:\n{block.group(1)}")
    lint = section[section.find("lintian -EvIL"):]
    explained = re.findall(r"^- `([a-z0-9][a-z0-9.+-]*)`:", lint, re.M)
    return "\n".join(commands) + "\n", deb, explained


def _ignore(top, cache):
    """What a fresh checkout would not have: git data, build trees, results."""
    def ignore(path, names):
        path = os.path.abspath(path)
        skip = {n for n in names if n in ("__pycache__", ".git")}
        for n in names:
            full = os.path.join(path, n)
            if full == cache or os.path.exists(os.path.join(full, "CMakeCache.txt")):
                skip.add(n)
        if path == top:
            skip |= {n for n in names if n.startswith("build")}
        if path == os.path.join(top, "bench"):
            skip |= {"results"} & set(names)
        return skip
    return ignore


def _tree_hash(root):
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            h.update(os.path.relpath(path, root).encode() + b"\0")
            h.update(b"%o\0" % (os.lstat(path).st_mode & 0o777))
            if os.path.islink(path):
                h.update(os.readlink(path).encode())
            else:
                with open(path, "rb") as f:
                    h.update(f.read())
            h.update(b"\0")
    return h.hexdigest()[:16]


def build(cache, log):
    """The .deb built by README's commands in a copy of the source tree under cache."""
    src = source_dir()
    commands, deb_pattern, _ = install_section(src)
    os.makedirs(cache, exist_ok=True)
    with open(os.path.join(cache, "lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        staging = os.path.join(cache, "staging")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(src, staging, symlinks=True,
                        ignore=_ignore(os.path.abspath(src), os.path.abspath(cache)))
        key = _tree_hash(staging)
        tree = os.path.join(cache, key)
        done = os.path.join(tree, ".built")
        if os.path.exists(done):
            shutil.rmtree(staging)
            log(f"reusing the package built from this same tree in {tree}")
        else:
            for old in os.listdir(cache):
                if old not in ("lock", "staging"):
                    shutil.rmtree(os.path.join(cache, old), ignore_errors=True)
            os.rename(staging, tree)
            log(f"building the package as README says, in {tree}:\n{commands}")
            try:
                p = subprocess.run(["sh", "-e", "-x", "-c", commands], cwd=tree,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   timeout=BUILD_TIMEOUT)
            except subprocess.TimeoutExpired:
                raise Error(f"README's build commands took over {BUILD_TIMEOUT} s")
            out = p.stdout.decode(errors="replace")
            if p.returncode != 0:
                raise Error(f"README's build commands failed (exit {p.returncode}):\n"
                            f"{out[-4000:]}")
            with open(done, "w") as f:
                f.write(out)
        debs = glob.glob(os.path.normpath(os.path.join(tree, deb_pattern)))
        if len(debs) != 1:
            raise Error(f"README installs {deb_pattern}; {tree} has {debs}")
        return debs[0]
