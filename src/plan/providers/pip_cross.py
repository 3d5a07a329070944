# kiln: pip install into the active venv for another architecture, run by
# the build machine's python3 of the same Debian suite (so the same Python
# version and glibc as the target's). Arguments: the target's machine name
# (`uname -m`: aarch64, x86_64), then pip's requirement arguments.
#
# pip installs another platform's wheels only with --target and
# --only-binary=:all:. Environment markers (`platform_machine == "aarch64"`)
# are evaluated as the target's: pip runs with platform.machine() answering
# the target's name. Console scripts land in TARGET/bin with the venv's
# python in their shebang and move to the venv's bin. A requirement with
# no wheel for the target whose sdist builds to a pure-Python wheel is
# built here. When pip still cannot install from wheels (an sdist of a C
# extension), the last line names the reason after kiln's marker, and kiln
# builds the app on the target platform (emulated) instead.
#
# pip --target installs into a temporary directory first: its .pyc files
# would hold that random path. Compiled here after the move instead, at
# their final paths, as pip compiles a native install (hash-based .pyc
# under SOURCE_DATE_EPOCH): the venv is the same on every build.
import compileall
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile

MARKER = "kiln: build on the target platform:"
machine = sys.argv[1]
requirements = sys.argv[2:]

# manylinux_2_N wheels run on glibc >= 2.N: every N from this suite's
# glibc down to the oldest the architecture has, plus the legacy aliases.
libc = os.confstr("CS_GNU_LIBC_VERSION").split()[1]
major, minor = (int(x) for x in libc.split(".")[:2])
oldest = 5 if machine in ("x86_64", "i686") else 17
aliases = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
platforms = []
for n in range(minor, oldest - 1, -1):
    platforms.append("manylinux_%d_%d_%s" % (major, n, machine))
    if n in aliases:
        platforms.append("%s_%s" % (aliases[n], machine))
platforms.append("linux_" + machine)

version = "%d.%d" % sys.version_info[:2]
abi = "cp%d%d" % sys.version_info[:2]
site = sysconfig.get_path("purelib")
before = set(os.listdir(site))
args = ["install", "--target", site, "--only-binary=:all:", "--no-compile"]
args += ["--implementation", "cp", "--python-version", version, "--abi", abi]
for p in platforms:
    args += ["--platform", p]
args += requirements
launch = (
    "import platform, sys; platform.machine = lambda: %r; "
    "from pip._internal.cli.main import main; sys.exit(main())" % machine
)


def pip(command, args):
    """Runs pip (`command`: how) with `args`: (exit status, its ERROR lines)."""
    proc = subprocess.Popen(
        command + args,
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    errors = []
    for line in proc.stderr:
        sys.stderr.write(line)
        if line.startswith("ERROR:"):
            errors.append(line[len("ERROR:"):].strip())
    return proc.wait(), errors


def emulate(reason):
    sys.stderr.write(
        "%s pip cannot install the requirements for %s (Python %s) from wheels alone: %s\n"
        % (MARKER, machine, version, reason)
    )
    sys.exit(1)


print(
    "pip install for %s (Python %s, glibc %s), wheels only: %s"
    % (machine, version, libc, " ".join(requirements)),
    flush=True,
)
# A requirement without a wheel whose sdist builds to a pure-Python wheel
# (`none-any`: docopt) is built here, natively, and offered to pip. One
# that builds to this machine's platform wheel (a C extension) has to be
# built on the target: the build runs again, emulated.
NO_DIST = "No matching distribution found for "
wheels = tempfile.mkdtemp(prefix="kiln-pure-wheels-")
built = []
while True:
    links = ["--find-links", wheels] if built else []
    status, errors = pip([sys.executable, "-c", launch], args + links)
    if status == 0:
        break
    reason = errors[-1] if errors else "pip exited with %d" % status
    if not reason.startswith(NO_DIST) or reason[len(NO_DIST):] in built:
        emulate(reason)
    req = reason[len(NO_DIST):]
    print("no wheel of %s for %s: building one here, kept if pure Python" % (req, machine), flush=True)
    had = set(os.listdir(wheels))
    status, _ = pip([sys.executable, "-m", "pip"], ["wheel", "--no-deps", "-w", wheels, req])
    new = sorted(set(os.listdir(wheels)) - had)
    if status != 0 or not new:
        emulate(reason)
    for name in new:
        if not name.endswith("-none-any.whl"):
            emulate("%s (its wheel %s is this machine's, not pure Python)" % (reason, name))
    built.append(req)
shutil.rmtree(wheels)

# Console scripts: TARGET/bin, their shebang already the venv's python.
scripts = os.path.join(site, "bin")
if os.path.isdir(scripts):
    bindir = os.path.join(sys.prefix, "bin")
    for name in sorted(os.listdir(scripts)):
        dest = os.path.join(bindir, name)
        if os.path.lexists(dest):
            os.remove(dest)
        shutil.move(os.path.join(scripts, name), dest)
    os.rmdir(scripts)

for name in sorted(set(os.listdir(site)) - before):
    path = os.path.join(site, name)
    if os.path.isdir(path):
        compileall.compile_dir(path, quiet=1)
    elif name.endswith(".py"):
        compileall.compile_file(path, quiet=1)
