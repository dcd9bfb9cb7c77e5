#!/usr/bin/env python3
"""startup_ld.py OUT.ld BINARY CALLGRIND_OUT...: write the linker script that gathers
the functions a start of kith ran (from callgrind's output files of BINARY, made with
`--demangle=no`) at the front of the binary's code, in the order BINARY has them.
See scripts/startup-order.sh.

Each function becomes input section patterns `.text.NAME` and `.text.unlikely.NAME`:
Rust and C code are built with one section per function, named after its symbol. A Rust symbol's hash
(`17h` + 16 hex digits in the legacy mangling, a crate's disambiguator `Cs…_` in the v0
mangling of the standard library) changes with the compiler, the target and the
dependencies, so it is replaced by `*`: the same script then serves the x86_64 build and the image's
aarch64 build, and survives an upgrade of the compiler. Names the linker does not find
are ignored, so a stale script only gathers less.
"""

import os
import re
import subprocess
import sys

# A callgrind line that names an object (ob=, cob=) or a function (fn=, cfn=).
NAMED = re.compile(r"^(ob|cob|fn|cfn)=\((\d+)\)(?: (.*))?$")
RUST_HASH = re.compile(r"^(_ZN.*17h)[0-9a-f]{16}E.*$")
# In Rust's v0 mangling (the standard library's), a crate's disambiguator.
V0_CRATE = re.compile(r"Cs[0-9A-Za-z]+_")
# Characters of a section name the linker script may hold unquoted (quoting turns
# wildcards off); Rust's legacy mangling and C names use only these.
PLAIN = re.compile(r"^[A-Za-z0-9_$.]+$")


def functions_run(path, binary):
    """The functions of `binary` that ran, as callgrind names them."""
    names = {"ob": {}, "fn": {}}
    kind = {"ob": "ob", "cob": "ob", "fn": "fn", "cfn": "fn"}
    current_object = None
    run = set()
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = NAMED.match(line.rstrip("\n"))
            if not m:
                continue
            tag, number, name = m.groups()
            table = names[kind[tag]]
            if name:
                table[number] = name.strip()
            # `cob=` names the object of a callee (the next `cfn=`) only: a
            # following `fn=` still belongs to the last `ob=`.
            if tag == "ob":
                current_object = table.get(number, "")
            elif tag == "fn" and current_object.endswith("/" + binary):
                # Without callgrind's mark of a recursive call ('2).
                run.add(re.sub(r"'\d+$", "", table[number]))
    return run


def pattern(name):
    """The section pattern for one function, or None when it cannot be written."""
    if name.startswith("0x"):
        return None
    m = RUST_HASH.match(name)
    if m:
        name = m.group(1) + "*"
    elif name.startswith("_R"):
        name = V0_CRATE.sub("Cs*_", name)
    elif not PLAIN.match(name):
        return None
    if not PLAIN.match(name.replace("*", "")):
        return None
    return name


def exact(name):
    """The function's own section name, hash and all, when it can be written."""
    if PLAIN.match(name) and pattern(name) is not None:
        return name
    return None


def write_group(f, names):
    for n in names:
        # LLVM puts a function it expects to run seldom (one run only at
        # start, as `main`) in `.text.unlikely.NAME`.
        f.write(f"    *(.text.{n} .text.unlikely.{n})\n")


def addresses(binary_path):
    """Each function symbol of the traced binary, by name: its address."""
    listing = subprocess.run(["nm", "--defined-only", binary_path],
                             capture_output=True, text=True, check=True).stdout
    found = {}
    for line in listing.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in "tTwW":
            found.setdefault(parts[2], int(parts[0], 16))
    return found


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    out, binary_path, outputs = sys.argv[1], sys.argv[2], sys.argv[3:]
    binary = os.path.basename(binary_path)
    run = set()
    for path in outputs:
        run |= functions_run(path, binary)
    # In the order the linker gave them without the script: functions that call
    # each other stay near each other, as in a build without it (sorted by
    # name, the code of a message's path lay scattered, and window-1
    # throughput fell by a sixth).
    at = addresses(binary_path)
    exacts = sorted({e for e in map(exact, run) if e}, key=lambda n: (at.get(n, 1 << 64), n))
    # A C function's name has no hash: its exact name is its pattern, and it
    # goes with the exact names, so that all that ran lies together.
    first = {}
    for name in run:
        p = pattern(name)
        if p and "*" in p:
            first[p] = min(first.get(p, 1 << 64), at.get(name, 1 << 64))
    patterns = sorted(first, key=lambda p: (first[p], p))
    if len(exacts) < 1000:
        sys.exit(f"startup_ld.py: only {len(exacts)} functions of {binary} ran: not a start")
    with open(out, "w", encoding="ascii") as f:
        f.write(
            "/* Made by scripts/startup-order.sh: do not edit by hand.\n"
            "   The functions a start of kith runs, gathered in front of the rest of its code,\n"
            "   so that a box at rest keeps fewer of the binary's pages in memory\n"
            "   (docs/benchmarks.md, \"Idle RSS\"). appliance/build.rs hands it to the linker.\n"
            "   First the functions by their exact names, as the traced build named them:\n"
            "   these gather exactly what ran, as long as the names stay the same (the same\n"
            "   compiler, target and dependencies). Then the Rust functions again with the\n"
            "   hash of each name left open: these also take other copies of a generic\n"
            "   function (not all of which ran), but still match after the names changed. */\n"
            "SECTIONS\n{\n  .text.kith_start :\n  {\n"
        )
        write_group(f, exacts)
        write_group(f, patterns)
        f.write("  }\n}\nINSERT BEFORE .text;\n")
    print(f"{out}: {len(exacts)} functions by exact name, {len(patterns)} Rust names also with the hash open")


if __name__ == "__main__":
    main()
