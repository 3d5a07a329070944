# Regenerates the corpus: python3 tests/dockerfiles/generate.py (overwrites files, never deletes).
import json, os, tarfile, io
root = os.path.dirname(os.path.abspath(__file__))
H = "ARG BASE=localhost:5000/debian:bookworm\nFROM $BASE\n"
cases = []
def case(name, dockerfile, expect=None, files=None, symlinks=None, header=True, extra=None):
    cases.append((name, (H if header else "") + dockerfile, expect or {}, files or {}, symlinks or {}, extra))

case("minimal", "RUN echo hello > /hello\n", {"ops": ["run"], "run_commands": [["/bin/sh", "-c", "echo hello > /hello"]]})
case("run-shell-and-exec", 'RUN echo shell > /shell\nRUN ["/bin/sh", "-c", "echo exec > /exec"]\nRUN ["touch", "/touched"]\n',
     {"ops": ["run", "run", "run"], "run_commands": [["/bin/sh", "-c", "echo shell > /shell"], ["/bin/sh", "-c", "echo exec > /exec"], ["touch", "/touched"]]})
case("env-forms", 'ENV A=1 B="two words" C=x\\ y\nENV LEGACY value with spaces\nRUN echo "$A|$B|$C|$LEGACY" > /env.txt\n',
     {"config": {"env": {"A": "1", "B": "two words", "C": "x y", "LEGACY": "value with spaces"}}})
case("env-expansion", 'ENV A=1\nENV A=2 B=$A\nENV C=${UNSET:-def} D=${A:+set} E=${UNSET+x}end F="${A}-$B" G=\'$A\' H=\\$A\nRUN echo "$B $C $D $E $F $G $H" > /out\n',
     {"config": {"env": {"A": "2", "B": "1", "C": "def", "D": "set", "E": "end", "F": "2-1", "G": "$A", "H": "$A"}}})
case("arg-global-scope", 'RUN echo "[$V]" > /before\nENV SEEN_BEFORE=[${V}]\nARG V\nENV SEEN_AFTER=[${V}]\nRUN echo "[$V]" > /after\n',
     {"config": {"env": {"SEEN_BEFORE": "[]", "SEEN_AFTER": "[global]"}}, "run_build_args": [[], [["V", "global"]]]},
     header=False, extra="ARG BASE=localhost:5000/debian:bookworm\nARG V=global\nFROM $BASE\n")
case("arg-build-arg-override", 'ARG X=default\nARG Y=keep\nENV X_IS=$X Y_IS=$Y\nRUN echo "$X $Y" > /args\n',
     {"build_args": {"X": "cli"}, "config": {"env": {"X_IS": "cli", "Y_IS": "keep"}}})
case("arg-env-precedence", 'ARG Y=from-arg\nENV Y=from-env\nRUN echo "$Y" > /y\n',
     {"build_args": {"Y": "from-cli"}, "config": {"env": {"Y": "from-env"}}, "run_build_args": [[]]})
case("arg-default-refers-to-arg", 'ARG A=one\nARG B=${A}-two\nENV B=$B\nRUN echo "$B" > /b\n',
     {"config": {"env": {"B": "one-two"}}})
case("workdir-relative", 'WORKDIR /a\nWORKDIR b\nWORKDIR ../c\nRUN pwd > /pwd\n', {"config": {"workdir": "/a/c"}})
case("workdir-env", 'ENV DIR=/srv\nWORKDIR $DIR/app\nCOPY file.txt .\nRUN cat file.txt > /copied\n',
     {"config": {"workdir": "/srv/app"}, "copy_dests": ["/srv/app/"]}, files={"file.txt": "content\n"})
case("user-numeric", 'USER 1000:1000\nRUN id -u > /tmp/uid && id -g > /tmp/gid\nUSER root\nRUN cp /tmp/uid /uid\n',
     {"config": {"user": "root"}})
case("user-env-workdir-interplay", 'ENV HOME=/home/app APP_USER=1000\nWORKDIR $HOME\nUSER $APP_USER\nRUN pwd > /tmp/pwd && echo "$HOME" > /tmp/home\n',
     {"config": {"user": "1000", "workdir": "/home/app", "env": {"HOME": "/home/app"}}})
case("copy-chown", 'COPY --chown=1000:1000 file.txt /app/\nCOPY --chown=1000 dir /owned/\nRUN stat -c %u:%g /app/file.txt > /owner\n',
     {"copy_dests": ["/app/", "/owned/"]}, files={"file.txt": "x\n", "dir/a": "a\n", "dir/sub/b": "b\n"})
case("copy-basic", 'COPY file.txt /dest.txt\nCOPY dir /destdir/\nCOPY dir/sub /flat\n',
     {"copy_dests": ["/dest.txt", "/destdir/", "/flat"]}, files={"file.txt": "x\n", "dir/a": "a\n", "dir/sub/b": "b\n"})
case("copy-wildcards", 'COPY *.txt /txt/\nCOPY src/*.c /c/\nCOPY [ab].md /md/\n',
     {"copy_dests": ["/txt/", "/c/", "/md/"]}, files={"1.txt": "1", "2.txt": "2", "src/x.c": "x", "src/y.h": "y", "a.md": "a", "c.md": "c"})
case("copy-dest-rules", 'COPY file.txt /newdir/\nCOPY file.txt /renamed\nCOPY dir /merged\nWORKDIR /w\nCOPY file.txt rel/\nCOPY file.txt .\n',
     {"copy_dests": ["/newdir/", "/renamed", "/merged", "/w/rel/", "/w/"]}, files={"file.txt": "x\n", "dir/a": "a\n"})
case("copy-chmod", 'COPY --chmod=0755 script.sh /usr/local/bin/script\nCOPY --chmod=600 file.txt /private\nRUN /usr/local/bin/script > /ran\n',
     {"copy_chmod": ["0755", "600"]}, files={"script.sh": "#!/bin/sh\necho ran\n", "file.txt": "x\n"})
case("copy-link", 'COPY --link file.txt /linked/\nCOPY --link dir /linked-dir/\n',
     {"copy_link": [True, True], "buildah": False, "why": "buildah 1.28 has no COPY --link"}, files={"file.txt": "x\n", "dir/a": "a\n"})
case("copy-exclude", 'COPY --exclude=*.md --exclude=tmp . /app/\n',
     {"buildah": False, "why": "buildah 1.28 has no COPY --exclude", "copy_exclude": [["*.md", "tmp"]]},
     files={"a.txt": "a", "README.md": "r", "tmp/x": "x", "src/b.txt": "b"})
case("copy-parents", 'COPY --parents a/b/c.txt x/y.txt /out/\n',
     {"buildah": False, "why": "COPY --parents is a labs feature", "copy_parents": [True]}, files={"a/b/c.txt": "c", "x/y.txt": "y"})
case("copy-json-form", 'COPY ["file with space.txt", "/dst/"]\nCOPY ["plain.txt", "/dst/plain.txt"]\n',
     {"copy_dests": ["/dst/", "/dst/plain.txt"]}, files={"file with space.txt": "s", "plain.txt": "p"})
case("copy-heredoc", 'ARG NAME=world\nCOPY <<EOF /etc/greeting\nhello $NAME\nEOF\nCOPY <<\'RAW\' /etc/raw\nraw $NAME\nRAW\n',
     {"buildah": False, "why": "buildah 1.28 has no heredocs", "inline": {"EOF": "hello world\n", "RAW": "raw $NAME\n"}})
case("copy-heredoc-multi", 'COPY <<A <<B /dir/\nfirst\nA\nsecond\nB\nCOPY --chmod=0755 <<-EOT /usr/local/bin/tool\n\t#!/bin/sh\n\techo tool\n\tEOT\nRUN /usr/local/bin/tool > /tool.out\n',
     {"buildah": False, "why": "buildah 1.28 has no heredocs", "inline": {"A": "first\n", "B": "second\n", "EOT": "#!/bin/sh\necho tool\n"}})
case("run-heredoc", 'RUN <<EOF\nset -e\necho one > /one\necho two > /two\nEOF\n',
     {"buildah": False, "why": "buildah 1.28 has no heredocs", "run_commands": [["/bin/sh", "-c", "set -e\necho one > /one\necho two > /two\n"]]})
case("run-heredoc-shebang", 'RUN <<EOF\n#!/bin/sh\necho shebang > /shebang\nEOF\n',
     {"buildah": False, "why": "buildah 1.28 has no heredocs", "run_commands": [["/dev/pipes/EOF"]], "mounts": [["inline"]]})
case("run-heredoc-redirect", 'RUN cat <<EOF > /file && cat <<\'X\' > /file2\nline $HOME\nEOF\nliteral $HOME\nX\n',
     {"buildah": False, "why": "buildah 1.28 has no heredocs"})
case("add-local-tar", 'ADD archive.tar /x/\nADD plain.txt /plain.txt\n',
     {"ops": ["copy", "copy"], "add": [True, True]}, files={"plain.txt": "p\n"})
case("multistage-basic", 'RUN echo built > /out\nFROM $BASE\nCOPY --from=0 /out /from-build\n',
     {"stages": 2, "order": [0, 1]})
case("multistage-named", 'FROM $BASE AS builder\nRUN mkdir -p /dist && echo app > /dist/app\nFROM $BASE AS runtime\nCOPY --from=builder /dist/ /app/\nCMD ["cat", "/app/app"]\n',
     {"stages": 2, "order": [0, 1], "copy_from": [{"stage": 0}], "config": {"cmd": ["cat", "/app/app"]}}, header=False, extra="ARG BASE=localhost:5000/debian:bookworm\n")
case("multistage-unused", 'FROM $BASE AS unused\nRUN false\nFROM $BASE AS used\nRUN echo used > /used\nFROM $BASE\nCOPY --from=used /used /used\n',
     {"stages": 3, "order": [1, 2], "buildah": False, "why": "buildah 1.28 builds unused stages too (RUN false fails there)"}, header=False, extra="ARG BASE=localhost:5000/debian:bookworm\n")
case("multistage-target", 'FROM $BASE AS build\nRUN echo build > /stage\nFROM $BASE AS test\nRUN echo test > /stage\nFROM $BASE\nRUN echo final > /stage\n',
     {"target": "test", "stages": 3, "order": [1]}, header=False, extra="ARG BASE=localhost:5000/debian:bookworm\n")
case("from-stage", 'FROM $BASE AS base\nENV FROM_BASE=1\nWORKDIR /work\nFROM base AS child\nRUN pwd > /pwd\n',
     {"stages": 2, "order": [0, 1], "config": {"env": {"FROM_BASE": "1"}, "workdir": "/work"}}, header=False, extra="ARG BASE=localhost:5000/debian:bookworm\n")
case("cmd-entrypoint-exec", 'ENTRYPOINT ["/bin/echo", "hello"]\nCMD ["world"]\n', {"config": {"entrypoint": ["/bin/echo", "hello"], "cmd": ["world"]}})
case("cmd-entrypoint-shell", 'ENTRYPOINT echo entry\nCMD echo cmd\n', {"config": {"entrypoint": ["/bin/sh", "-c", "echo entry"], "cmd": ["/bin/sh", "-c", "echo cmd"]}})
case("entrypoint-resets-cmd", 'CMD ["first"]\nENTRYPOINT ["/bin/true"]\nFROM $BASE AS second\nENTRYPOINT ["/bin/true"]\n',
     {"config": {"entrypoint": ["/bin/true"], "cmd": None}, "stages": 2})
case("expose", 'ARG PORT=8080\nEXPOSE $PORT 443/tcp 53/udp 7000-7002\n',
     {"config": {"exposed": ["443/tcp", "53/udp", "7000/tcp", "7001/tcp", "7002/tcp", "8080/tcp"]}})
case("labels", 'ARG VERSION=1.2.3\nLABEL org.opencontainers.image.version=$VERSION "com.example.desc"="two words" \\\n      multi="a b" single=\'$VERSION\'\nLABEL org.opencontainers.image.version=override\n',
     {"config": {"labels": {"org.opencontainers.image.version": "override", "com.example.desc": "two words", "multi": "a b", "single": "$VERSION"}}})
case("volume", 'VOLUME /data\nVOLUME ["/logs", "/cache"]\nENV V=/var/lib/app\nVOLUME $V\n', {"config": {"volumes": ["/cache", "/data", "/logs", "/var/lib/app"]}})
case("stopsignal", 'STOPSIGNAL SIGQUIT\n', {"config": {"stop_signal": "SIGQUIT"}})
case("healthcheck", 'HEALTHCHECK --interval=30s --timeout=3s --start-period=5s --retries=3 CMD test -f /healthy || exit 1\n',
     {"config": {"healthcheck": ["CMD-SHELL", "test -f /healthy || exit 1"]}})
case("healthcheck-none", 'HEALTHCHECK CMD ["/bin/true"]\nHEALTHCHECK NONE\n', {"config": {"healthcheck": ["NONE"]}})
case("shell-instruction", 'SHELL ["/bin/bash", "-c"]\nRUN echo "$BASH_VERSION" | cut -d. -f1 > /bash-major\nCMD echo via-bash\n',
     {"config": {"cmd": ["/bin/bash", "-c", "echo via-bash"]}, "run_commands": [["/bin/bash", "-c", "echo \"$BASH_VERSION\" | cut -d. -f1 > /bash-major"]]})
case("onbuild", 'ONBUILD RUN echo triggered > /triggered\nONBUILD COPY . /app\n', {"config": {"on_build": ["RUN echo triggered > /triggered", "COPY . /app"]}})
case("maintainer", 'MAINTAINER Jane Doe <jane@example.com>\n', {"config": {"author": "Jane Doe <jane@example.com>"}})
case("dockerignore-basic", 'COPY . /ctx/\n', {"context_files": ["Dockerfile", "keep.txt", "src/main.c"]},
     files={"keep.txt": "k", "debug.log": "l", "src/main.c": "m", "build/out.o": "o", ".dockerignore": "*.log\nbuild\n.dockerignore\n"})
case("dockerignore-exceptions", 'COPY . /ctx/\n', {"context_files": ["Dockerfile", "docs/README.md", "keep.md"]},
     files={"keep.md": "k", "other.md": "o", "docs/README.md": "r", "docs/guide.md": "g", "src/x": "x", ".dockerignore": "*.md\n!keep.md\ndocs\n!docs/README.md\nsrc\n.dockerignore\n"})
case("dockerignore-doublestar", 'COPY . /ctx/\n', {"context_files": ["Dockerfile", "a/b/keep.py", "top.py"]},
     files={"top.py": "t", "top.pyc": "c", "a/b/keep.py": "k", "a/b/drop.pyc": "d", "a/__pycache__/x": "x", ".dockerignore": "**/*.pyc\n**/__pycache__\n/.dockerignore\n"})
case("dockerignore-custom-dockerfile", 'COPY . /ctx/\n', {"dockerfile": "app.Dockerfile", "buildah": False, "why": "buildah 1.28 reads only .dockerignore/.containerignore", "context_files": ["app.Dockerfile", "general.txt"]},
     files={"general.txt": "g", "specific.txt": "s", ".dockerignore": "general.txt\n", "app.Dockerfile.dockerignore": "specific.txt\n*.dockerignore\n.dockerignore\n"})
case("rm-whiteouts", 'RUN mkdir -p /d/sub && echo a > /d/a && echo b > /d/sub/b\nRUN rm /d/a && rm -r /d/sub\nRUN rm -f /etc/motd\n', {"ops": ["run", "run", "run"]})
case("opaque-dir", 'RUN mkdir -p /opt/x && touch /opt/x/old\nRUN rm -rf /opt/x && mkdir /opt/x && touch /opt/x/new\n', {"ops": ["run", "run"]})
case("escape-directive", 'RUN echo a `\n    b > /ab\nCOPY dir\\file.txt /win/\n', {"run_commands": [["/bin/sh", "-c", "echo a     b > /ab"]]},
     files={"dir\\file.txt": "odd name\n"}, header=False, extra="# escape=`\nARG BASE=localhost:5000/debian:bookworm\nFROM $BASE\n")
case("continuations-and-comments", 'RUN echo one \\\n# a comment inside\n    && echo two \\\n    && echo three > /out\n# syntax=ignored-here\nENV A=1 \\\n    B=2\n',
     {"run_commands": [["/bin/sh", "-c", "echo one     && echo two     && echo three > /out"]], "config": {"env": {"A": "1", "B": "2"}}},
     header=False, extra="# syntax=docker/dockerfile:1\n# check=skip=all\nARG BASE=localhost:5000/debian:bookworm\nFROM $BASE\n")
case("run-mount-cache", 'RUN --mount=type=cache,target=/var/cache/app,id=appcache,sharing=locked echo cached > /var/cache/app/x && ls /var/cache/app > /listing\n',
     {"mounts": [["cache"]]})
case("run-mount-secret", 'RUN --mount=type=secret,id=token cat /run/secrets/token | wc -c > /token-len\nRUN --mount=type=secret,id=token,target=/etc/tok,mode=0440 test -f /etc/tok\n',
     {"secrets": {"token": "token.txt"}, "mounts": [["secret"], ["secret"]]}, files={"token.txt": "s3cret"})
case("run-mount-bind", 'RUN --mount=type=bind,source=data,target=/mnt/data cp /mnt/data/x /x\nRUN --mount=target=/src cat /src/data/x > /y\n',
     {"mounts": [["bind"], ["bind"]], "run_context_digest": [True, True]}, files={"data/x": "from bind\n"})
case("run-mount-tmpfs", 'RUN --mount=type=tmpfs,target=/scratch echo t > /scratch/t && cat /scratch/t > /t\n', {"mounts": [["tmpfs"]]})
case("run-network-none", 'RUN --network=none echo offline > /offline\n', {"network": ["none"]})
case("symlinks-in-context", 'COPY dir /dir/\nCOPY link-to-file /followed\n', {"context_files": ["Dockerfile", "dir/real.txt", "dir/rel-link", "link-to-file"]},
     files={"dir/real.txt": "real\n"}, symlinks={"dir/rel-link": "real.txt", "link-to-file": "dir/real.txt"})
case("platform-args", 'ARG TARGETARCH\nARG TARGETOS\nRUN echo "$TARGETOS/$TARGETARCH" > /platform\nENV ARCH=$TARGETARCH\n',
     {"config": {"env": {"ARCH": "amd64"}}}, header=False, extra="ARG BASE=localhost:5000/debian:bookworm\nFROM --platform=$BUILDPLATFORM $BASE\n")
case("env-in-copy-dest", 'ENV D=/dst\nCOPY file.txt $D/\nCOPY file.txt ${D}/named.txt\n', {"copy_dests": ["/dst/", "/dst/named.txt"]}, files={"file.txt": "x"})
case("instructions-case-insensitive", 'run echo lower > /lower\nenv A=1\ncopy file.txt /f\n', {"ops": ["run", "config", "copy"]}, files={"file.txt": "x"})
case("workdir-creates-dir", 'WORKDIR /created/deep\nRUN touch here\n', {"config": {"workdir": "/created/deep"}})
case("arg-multiple-per-line", 'ARG A=1 B=2 C\nENV ALL="$A $B ${C:-none}"\n', {"config": {"env": {"ALL": "1 2 none"}}})
case("add-compressed-tars", 'ADD a.tar.gz /gz/\nADD b.tbz /bz/\nADD c.txz /xz\nADD d.tar.zst /zst/\nADD not-really.tar.gz /raw/\n',
     {"add": [True] * 5, "ops": ["copy"] * 5}, files={"not-really.tar.gz": "just text\n"})
case("workdir-after-user", 'USER 1000:1000\nWORKDIR /srv/data/app\nRUN touch written-by-user\n',
     {"config": {"user": "1000:1000", "workdir": "/srv/data/app"}})

# A tar for add-local-tar, deterministic.
def tar_bytes():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
        for name, data in [("inner/a.txt", b"from tar\n"), ("b.txt", b"b\n")]:
            ti = tarfile.TarInfo(name); ti.size = len(data); ti.mtime = 1; ti.mode = 0o644
            t.addfile(ti, io.BytesIO(data))
    return buf.getvalue()

# A tar with owners, modes, a directory and a symlink, for add-compressed-tars.
def owned_tar_bytes():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
        ti = tarfile.TarInfo("pkg"); ti.type = tarfile.DIRTYPE; ti.mode = 0o750; ti.uid = 1234; ti.gid = 5678; ti.mtime = 1
        t.addfile(ti)
        ti = tarfile.TarInfo("pkg/secret"); data = b"private\n"; ti.size = len(data); ti.mode = 0o600; ti.uid = 1234; ti.gid = 5678; ti.mtime = 1
        t.addfile(ti, io.BytesIO(data))
        ti = tarfile.TarInfo("pkg/link"); ti.type = tarfile.SYMTYPE; ti.linkname = "secret"; ti.mtime = 1
        t.addfile(ti)
    return buf.getvalue()

for i, (name, df, expect, files, links, extra) in enumerate(cases, 1):
    d = os.path.join(root, f"{i:02d}-{name}")
    os.makedirs(d, exist_ok=True)
    dfname = expect.get("dockerfile", "Dockerfile")
    text = (extra or "") + df
    with open(os.path.join(d, dfname), "w") as f: f.write(text)
    for p, c in files.items():
        fp = os.path.join(d, p); os.makedirs(os.path.dirname(fp), exist_ok=True)
        with open(fp, "w") as f: f.write(c)
    for p, t in links.items():
        fp = os.path.join(d, p); os.makedirs(os.path.dirname(fp), exist_ok=True)
        if os.path.lexists(fp): os.remove(fp)
        os.symlink(t, fp)
    if name == "add-local-tar":
        with open(os.path.join(d, "archive.tar"), "wb") as f: f.write(tar_bytes())
    if name == "add-compressed-tars":
        # Recognised by content, not by name: the names only look right.
        import gzip, bz2, lzma, subprocess
        raw = owned_tar_bytes()
        for fname, data in [("a.tar.gz", gzip.compress(raw, mtime=0)), ("b.tbz", bz2.compress(raw)),
                            ("c.txz", lzma.compress(raw)),
                            ("d.tar.zst", subprocess.run(["zstd", "-q", "-c"], input=raw, capture_output=True, check=True).stdout)]:
            with open(os.path.join(d, fname), "wb") as f: f.write(data)
    with open(d + ".expect.json", "w") as f: json.dump(expect, f, indent=2, sort_keys=True); f.write("\n")
print(len(cases))
