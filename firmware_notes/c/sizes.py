"""Sizes of the acedev library that a firmware engineer plans with, written
into firmware_notes/budgets.md between ``<!-- measured: c-sizes -->`` and
``<!-- /measured -->``:

* code size per source file for Cortex-M4 (``arm-none-eabi-gcc -Os -mthumb
  -mcpu=cortex-m4``) and x86-64 (``gcc -Os``), text + data (the library has
  no bss);
* stack per function (``-fstack-usage``) and the worst chain below it from
  the call graph (``-fcallgraph-info=su``), crypto hook calls not included;
* RAM per token: ``sizeof`` of the structs a device keeps;
* the PSA Crypto hook (``hooks/crypto_psa.c``) compiled the same way against
  the Mbed TLS headers found by the host compiler: its code size, and its
  functions' frames with the worst chain inside the hook (PSA's own code not
  counted).

    python3 sizes.py [--build DIR] [--check]

``--check`` exits 1 when budgets.md does not hold what this run computes.
Standard library only.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BUDGETS = HERE.parent / "budgets.md"
SOURCES = ("cbor.c", "aif.c", "token.c", "coap.c", "proof.c", "state.c")
STRUCTS = ("ace_token", "ace_piv", "ace_echo", "ace_token_response", "ace_coap_response")
TARGETS = {
    "Cortex-M4": ("arm-none-eabi-gcc", "arm-none-eabi-", ["-mthumb", "-mcpu=cortex-m4"]),
    "x86-64": ("gcc", "", []),
}
CFLAGS = ["-std=c99", "-Os", "-ffunction-sections", "-fdata-sections", "-fno-common"]
BEGIN, END = "<!-- measured: c-sizes -->\n", "<!-- /measured -->"
PSA_HOOK = "crypto_psa.c"
PSA_HOOK_PUBLIC = ("ace_crypto_psa", "ace_psa_import_es256", "ace_psa_free")


def run(cmd: list[str], cwd: Path = HERE) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout}{proc.stderr}")
    return proc.stdout


def mbedtls_headers(build: Path) -> tuple[Path, str]:
    """A directory holding only the Mbed TLS headers (``psa/``, ``mbedtls/``)
    the host compiler finds, for the cross compiler (which must not see the
    host's libc headers), and the Mbed TLS version they are."""
    probe = subprocess.run(
        ["gcc", "-E", "-H", "-x", "c", "-", "-o", "/dev/null"],
        input="#include <psa/crypto.h>\n",
        capture_output=True,
        text=True,
    )
    found = re.search(r"^\. (\S+)/psa/crypto\.h$", probe.stderr, re.M)
    if probe.returncode != 0 or not found:
        raise SystemExit(f"no PSA Crypto headers (libmbedtls-dev):\n{probe.stderr}")
    root = Path(found.group(1))
    version = re.search(
        r'#define MBEDTLS_VERSION_STRING\s+"([^"]+)"', (root / "mbedtls" / "version.h").read_text()
    )
    if not version:
        raise SystemExit(f"no MBEDTLS_VERSION_STRING in {root}/mbedtls/version.h")
    inc = build / "mbedtls-include"
    inc.mkdir(parents=True, exist_ok=True)
    for sub in ("psa", "mbedtls"):
        link = inc / sub
        if not link.is_symlink():
            link.symlink_to(root / sub)
    return inc, version.group(1)


def compile_one(
    cc: str,
    prefix: str,
    flags: list[str],
    src: str,
    obj: Path,
    frames: dict[str, int],
    edges: dict[str, set[str]],
) -> int:
    """Compile ``src`` to ``obj``; record its frames and call edges; return
    text + data."""  # fmt: skip
    run(
        [cc, *CFLAGS, *flags, "-Iinclude", "-Isrc", "-fstack-usage",
         "-fcallgraph-info=su", "-c", src, "-o", str(obj)]
    )  # fmt: skip
    text, data, _bss = (
        int(x) for x in run([prefix + "size", str(obj)]).splitlines()[1].split()[:3]
    )
    for line in obj.with_suffix(".su").read_text().splitlines():
        where, size, _kind = line.split("\t")
        frames[where.rsplit(":", 1)[-1]] = int(size)
    ci = obj.with_suffix(".ci").read_text()
    for source, target in re.findall(r'edge: \{ sourcename: "([^"]+)" targetname: "([^"]+)"', ci):
        edges.setdefault(source.rsplit(":", 1)[-1], set()).add(target.rsplit(":", 1)[-1])
    return text + data


def chains(frames: dict[str, int], edges: dict[str, set[str]]) -> dict[str, int]:
    """Each function's frame plus the worst chain of calls below it that
    stays inside ``frames``."""

    def chain(fn: str, seen: frozenset[str] = frozenset()) -> int:
        below = [chain(t, seen | {fn}) for t in edges.get(fn, ()) if t in frames and t not in seen]
        return frames[fn] + max(below, default=0)

    return {fn: chain(fn) for fn in frames}


def compile_target(name: str, build: Path) -> dict[str, object]:
    cc, prefix, flags = TARGETS[name]
    out = build / name
    out.mkdir(parents=True, exist_ok=True)
    code: dict[str, int] = {}
    frames: dict[str, int] = {}
    edges: dict[str, set[str]] = {}
    for src in SOURCES:
        obj = out / src.replace(".c", ".o")
        code[src] = compile_one(cc, prefix, flags, f"src/{src}", obj, frames, edges)
    mbedtls_inc, mbedtls_version = mbedtls_headers(build)
    hook_frames: dict[str, int] = {}
    hook_edges: dict[str, set[str]] = {}
    hook_code = compile_one(
        cc, prefix, [*flags, "-Ihooks", "-isystem", str(mbedtls_inc)], f"hooks/{PSA_HOOK}",
        out / PSA_HOOK.replace(".c", ".o"), hook_frames, hook_edges,
    )  # fmt: skip
    hook_frames = {
        fn: size for fn, size in hook_frames.items() if fn in ("sha256", "hmac_sha256", "sign")
        or fn in PSA_HOOK_PUBLIC
    }  # fmt: skip
    sizes_src = out / "sizeof.c"
    sizes_src.write_text(
        '#include "acedev.h"\n'
        + "".join(f"char sizeof_{s}[sizeof(struct {s})];\n" for s in STRUCTS)
    )
    obj = out / "sizeof.o"
    run([cc, *CFLAGS, *flags, "-Iinclude", "-c", str(sizes_src), "-o", str(obj)])
    structs = {}
    for line in run([prefix + "nm", "-S", str(obj)]).splitlines():
        _addr, size, _kind, sym = line.split()
        structs[sym.removeprefix("sizeof_")] = int(size, 16)

    return {
        "code": code,
        "frames": frames,
        "chains": chains(frames, edges),
        "structs": structs,
        "compiler": run([cc, "-dumpversion"]).strip(),
        "hook_code": hook_code,
        "hook_frames": hook_frames,
        "hook_chains": chains(hook_frames, hook_edges),
        "mbedtls": mbedtls_version,
    }


def render(results: dict[str, dict[str, object]]) -> str:
    names = list(TARGETS)
    arm, x86 = (results[n] for n in names)
    lines = [
        f"Code size in bytes (text + data; no bss), `-Os`: Cortex-M4 with arm-none-eabi-gcc "
        f"{arm['compiler']} (`-mthumb -mcpu=cortex-m4`), x86-64 with gcc {x86['compiler']}. "
        "The crypto hook and your CoAP stack come on top.",
        "",
        "| source | " + " | ".join(names) + " |",
        "|---|---:|---:|",
    ]
    for src in SOURCES:
        lines.append(
            f"| `{src}` | " + " | ".join(str(results[n]["code"][src]) for n in names) + " |"
        )  # type: ignore[index]
    lines.append(
        "| **total** | "
        + " | ".join(f"**{sum(results[n]['code'].values())}**" for n in names)  # type: ignore[attr-defined]
        + " |"
    )
    lines += [
        "",
        "Stack in bytes per public function (`-fstack-usage`: its own frame) and the worst "
        "chain of library calls below it (`-fcallgraph-info`), not counting the crypto hook:",
        "",
        "| function | Cortex-M4 frame | Cortex-M4 worst chain | x86-64 frame "
        "| x86-64 worst chain |",
        "|---|---:|---:|---:|---:|",
    ]
    public = sorted(
        (fn for fn in arm["frames"] if fn.startswith("ace_") and not fn.startswith("ace_w_")),  # type: ignore[attr-defined]
        key=lambda fn: (-arm["chains"][fn], fn),  # type: ignore[index]
    )
    for fn in public:
        lines.append(
            f"| `{fn}` | {arm['frames'][fn]} | {arm['chains'][fn]} | "  # type: ignore[index]
            f"{x86['frames'].get(fn, '-')} | {x86['chains'].get(fn, '-')} |"  # type: ignore[attr-defined]
        )
    lines += [
        "",
        "RAM the device keeps, `sizeof` with the default `ACE_TOKEN_MAX` (512) and "
        "`ACE_KID_MAX` (16):",
        "",
        "| struct | " + " | ".join(names) + " | what |",
        "|---|---:|---:|---|",
    ]
    what = {
        "ace_token": "per token: the token bytes, kid, PoP key, deadline, piv counter",
        "ace_piv": "inside `ace_token`",
        "ace_echo": "one, while an Echo round is under way",
        "ace_token_response": "transient, while parsing a token response",
        "ace_coap_response": "transient, per response",
    }
    for s in STRUCTS:
        lines.append(
            f"| `struct {s}` | "
            + " | ".join(str(results[n]["structs"][s]) for n in names)  # type: ignore[index]
            + f" | {what[s]} |"
        )
    hook_fns = ("sha256", "hmac_sha256", "sign", *PSA_HOOK_PUBLIC)
    lines += [
        "",
        f"The PSA Crypto hook, [`hooks/{PSA_HOOK}`](c/hooks/{PSA_HOOK}), compiled the same way "
        f"against the headers of Mbed TLS {arm['mbedtls']}: "
        f"**{arm['hook_code']}** bytes on Cortex-M4, **{x86['hook_code']}** on x86-64 "
        "(PSA Crypto itself not counted). Its stack per function, with the worst chain "
        "inside the hook. Mbed TLS keeps the HMAC and hash state in the operation "
        "structs, on the hook's stack: that is most of these frames (TF-M's "
        "non-secure side keeps a handle there):",
        "",
        "| hook function | Cortex-M4 frame | Cortex-M4 worst chain | x86-64 frame "
        "| x86-64 worst chain |",
        "|---|---:|---:|---:|---:|",
    ]
    for fn in hook_fns:
        lines.append(
            f"| `{fn}` | {arm['hook_frames'][fn]} | {arm['hook_chains'][fn]} | "  # type: ignore[index]
            f"{x86['hook_frames'][fn]} | {x86['hook_chains'][fn]} |"  # type: ignore[index]
        )
    return "\n".join(lines)


def current(build: Path) -> str:
    return render({name: compile_target(name, build / "sizes") for name in TARGETS})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", type=Path, default=HERE / "build")
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args(argv)
    body = current(args.build.resolve())
    text = BUDGETS.read_text()
    start = text.index(BEGIN) + len(BEGIN)
    end = text.index(END, start)
    new = text[:start] + body + "\n" + text[end:]
    if args.check:
        if new != text:
            print("budgets.md is not current: run python3 firmware_notes/c/sizes.py")
            print(body)
            return 1
        print("budgets.md is current")
        return 0
    BUDGETS.write_text(new)
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
