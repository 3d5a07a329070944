# kiln: pip install into the active venv for another architecture, run by
# the build machine's python3 of the same Debian suite (so the same Python
# version and glibc as the target's). Arguments: the target's machine name
# (`uname -m`: aarch64, x86_64), then pip's requirement arguments.
#
# pip installs another platform's wheels only with --target and
# --only-binary=:all:. Environment markers (`platform_machine == "aarch64"`)
# are evaluated as the target's: pip runs with platform.machine() answering
# the target's name. Console scripts land in TARGET/bin with the venv's
# python in their shebang and move to the venv's bin. When pip cannot
# install from wheels alone (a requirement with no wheel for the target),
# the last line names the reason after kiln's marker, and kiln builds the
# install on the target platform (emulated) instead.
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
print(
    "pip install for %s (Python %s, glibc %s), wheels only: %s"
    % (machine, version, libc, " ".join(requirements)),
    flush=True,
)
pip = subprocess.Popen(
    [sys.executable, "-c", launch] + args,
    stdin=subprocess.DEVNULL,
    stderr=subprocess.PIPE,
    text=True,
)
errors = []
for line in pip.stderr:
    sys.stderr.write(line)
    if line.startswith("ERROR:"):
        errors.append(line[len("ERROR:"):].strip())
if pip.wait() != 0:
    reason = errors[-1] if errors else "pip exited with %d" % pip.returncode
    sys.stderr.write(
        "%s pip cannot install the requirements for %s (Python %s) from wheels alone: %s\n"
        % (MARKER, machine, version, reason)
    )
    sys.exit(1)

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
