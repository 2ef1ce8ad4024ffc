#!/usr/bin/env bash
# venv-bcc.sh VENV -- make Debian's bcc Python package (python3-bpfcc) importable from the venv VENV, and only
# it (not the whole of Debian's dist-packages): a link in the venv's site-packages, where every tool takes it
# for what it is, an installed third-party package. (Before, a folder outside site-packages named in a .pth
# file: hypothesis took bcc for the project's own code and parsed its source for constants, and the invalid
# escape in bcc/__init__.py's b'^.*\.cold...' printed a DeprecationWarning in the tests.) Idempotent.
set -euo pipefail
venv=${1:?usage: venv-bcc.sh VENV}
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
ln -sfn /usr/lib/python3/dist-packages/bcc "$site/bcc"
rm -f "$site/utrace-bcc.pth" && rm -rf "$venv/bcc-dist"  # the earlier layout
