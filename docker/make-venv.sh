#!/bin/sh
# make-venv CONSTRAINTS: every pinned dependency into /opt/venv, a venv without pip
# (nothing may pip-install at run time), from binary wheels only (nothing compiled here).
# Then removes what no step ever loads: TensorFlow's C++ headers and its libraries'
# symbol tables (~250 MB; the dynamic symbols stay), libclang (a dependency of
# TensorFlow's op generator, never imported at run time) and the numeric libraries'
# test suites (~130 MB).
set -eu
constraints=$1
python -m venv --without-pip /opt/venv
with-build-secrets /opt/build/bin/pip --python /opt/venv/bin/python install \
  --only-binary :all: --find-links /wheels --requirement "$constraints"
site=$(/opt/venv/bin/python -c "import sysconfig; print(sysconfig.get_path('purelib'))")
rm -rf "$site/tensorflow/include" "$site/clang"
find "$site/tensorflow" -type f -name '*.so*' -exec strip --strip-unneeded {} +
/opt/venv/bin/python -c "import tensorflow"
find "$site/numpy" "$site/scipy" "$site/sklearn" "$site/matplotlib" "$site/mpl_toolkits" \
  -depth -type d -name tests -exec rm -rf {} +
