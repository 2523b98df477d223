#!/usr/bin/env bash
# Install the Debian bio tools this project calls (default: mmseqs2), skipping those already there.
#
#   bash preprocess/install_tools.sh            # mmseqs2
#   bash preprocess/install_tools.sh mmseqs2 dssp hmmer
#
# Idempotent: a package whose command is on PATH is skipped. Runs apt-get as root, else through
# `sudo -n` (never prompts); tries the install first and runs `apt-get update` only if that fails.
# Exits 1 with one `error:` line when a tool cannot be installed.
set -euo pipefail

# the command a package provides, where it differs from the package name
command_of() {
    case "$1" in
        mmseqs2) echo mmseqs ;;
        dssp) echo mkdssp ;;
        hmmer) echo phmmer ;;
        *) echo "$1" ;;
    esac
}

missing=()
for package in "${@:-mmseqs2}"; do
    tool=$(command_of "$package")
    if command -v "$tool" >/dev/null 2>&1; then
        echo "$package: $tool already installed ($(command -v "$tool"))"
    else
        missing+=("$package")
    fi
done
[ "${#missing[@]}" -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
else
    echo "error: ${missing[*]} not installed and no root or password-less sudo to install it;" \
        "ask an administrator for: apt-get install ${missing[*]}" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: ${missing[*]} not installed and apt-get is not available (not Debian/Ubuntu);" \
        "install ${missing[*]} with this system's package manager or from the project's release page" >&2
    exit 1
fi

install() {
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
}
echo "installing ${missing[*]} with apt-get"
if ! install; then
    echo "apt-get install failed; running apt-get update and retrying"
    if ! { "${as_root[@]}" apt-get update && install; }; then
        echo "error: apt-get could not install ${missing[*]} (see apt-get's messages above);" \
            "check the network/apt sources or install it by hand" >&2
        exit 1
    fi
fi
for package in "${missing[@]}"; do
    tool=$(command_of "$package")
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "error: $package installed but $tool is not on PATH" >&2
        exit 1
    fi
    echo "$package: installed $tool ($(command -v "$tool"))"
done
