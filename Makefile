# ocisquash: `make demo` squashes the sample image (installs Python packages into $(VENV), nothing else);
# `make test` installs the Debian test tools too (`make debs`, apt-get as root or sudo) and runs every check CI runs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# docker.io/containerd/busybox-static: the real-client tests' own dockerd (busybox is docker build's shell);
# apparmor: dockerd must load its profile where the kernel enforces AppArmor (Debian's default)
# docker-registry, apache2-utils (htpasswd), openssl: the registry tests' own registry, passwords and CA
# time: GNU time (/usr/bin/time), the registry-bounds tests' peak-RSS reading of a child
# debootstrap: the Debian base the container image tests build from (contrib/debian-base.sh; no registry needed)
DEBS := umoci skopeo podman buildah libmagic1 jq oci-image-tool docker.io containerd runc iptables busybox-static apparmor \
	docker-registry apache2-utils openssl debootstrap time
DEB_TOOLS := umoci skopeo podman buildah jq oci-image-tool dockerd containerd ctr runc iptables busybox \
	docker-registry htpasswd openssl debootstrap

.PHONY: setup debs venv demo test lint pytest pytest-pure fuzz clean bench image

setup: debs venv  ## everything `make test` needs: the Debian test tools and the venv

debs:  ## Debian packages the tests use (umoci, skopeo, and docker/containerd/podman: the oracles); root or sudo
	@missing=""; for t in $(DEB_TOOLS); do command -v $$t >/dev/null || [ -x /usr/sbin/$$t ] || missing="$$missing $$t"; done; \
	[ "$$(cat /sys/module/apparmor/parameters/enabled 2>/dev/null)" != Y ] || [ -x /usr/sbin/apparmor_parser ] || [ -x /sbin/apparmor_parser ] || missing="$$missing apparmor"; \
	[ -x /usr/bin/time ] || missing="$$missing time"; \
	[ -e /usr/lib/x86_64-linux-gnu/libmagic.so.1 ] || [ -e /usr/lib/aarch64-linux-gnu/libmagic.so.1 ] || missing="$$missing libmagic1"; \
	if [ -n "$$missing" ]; then \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends $(DEBS); \
	fi

venv: $(VENV)/.installed

# The editable install compiles the merge's hot modules with mypyc (setup.py), and Python imports those
# before the .py files beside them: a change to a merge source needs this rebuild to run.
$(VENV)/.installed: pyproject.toml constraints.txt setup.py $(wildcard ocisquash/merge/*.py ocisquash/tar/*.py)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $@

# The demo needs Python only: its set-up is the venv (pip into $(VENV)); it never runs apt-get.
demo: venv  ## squash the sample image shipped in testdata/ and show the report
	$(VENV)/bin/ocisquash images testdata/sample.docker.tar
	$(VENV)/bin/ocisquash testdata/sample.docker.tar /tmp/ocisquash-demo.tar --tag sample:squashed
	$(VENV)/bin/ocisquash images /tmp/ocisquash-demo.tar

# ocisquash's own image (Containerfile), built with buildah (docker where buildah is absent), then squashed by
# the venv's ocisquash into $(IMAGE_TAR) and loaded as $(IMAGE). BASE: the Containerfile's base (empty: its
# default, debian:bookworm-slim from Docker Hub); BASE=local builds one without a registry, with debootstrap
# (root), once: contrib/debian-base.sh into $(BASE_CACHE). pip's PIP_CERT (a proxy's CA) reaches buildah's
# build stage as a mounted file, never the image.
IMAGE ?= localhost/ocisquash:latest
IMAGE_TAR ?= ocisquash-image.tar
BASE ?=
BASE_CACHE ?= $(HOME)/.cache/ocisquash/debian-bookworm-python3.oci.tar
SQUASH_ARGS ?=

image: venv  ## build ocisquash's own image and squash it with ocisquash: $(IMAGE_TAR), loaded as $(IMAGE)
	@set -eu; base="$(BASE)"; \
	if [ "$$base" = local ]; then [ -s "$(BASE_CACHE)" ] || contrib/debian-base.sh "$(BASE_CACHE)"; \
	  base="oci-archive:$(BASE_CACHE)"; fi; \
	arg=""; [ -z "$$base" ] || arg="--build-arg BASE=$$base"; \
	[ -z "$(PIP_CERT)" ] || pipcert="-v $(PIP_CERT):/run/pip-cert.pem:ro --build-arg PIP_CERT=/run/pip-cert.pem"; \
	built="$(IMAGE_TAR).build"; build="$(IMAGE)-build"; trap 'rm -f "$$built"' EXIT; rm -f "$$built"; \
	if command -v buildah >/dev/null; then \
	  echo "buildah bud --layers --isolation chroot $$arg -t $$build ."; \
	  buildah bud --layers --isolation chroot $$arg $${pipcert:-} -f Containerfile -t "$$build" .; \
	  buildah push -q "$$build" "docker-archive:$$built:$(IMAGE)"; buildah rmi "$$build" >/dev/null; \
	else \
	  echo "docker build $$arg -t $$build ."; \
	  docker build $$arg -f Containerfile -t "$$build" .; \
	  docker save -o "$$built" "$$build"; docker rmi "$$build" >/dev/null; \
	fi; \
	$(VENV)/bin/ocisquash "$$built" "$(IMAGE_TAR)" --tag "$(IMAGE)" $(SQUASH_ARGS); \
	if command -v buildah >/dev/null; then \
	  if command -v podman >/dev/null; then podman load -q -i "$(IMAGE_TAR)"; \
	  else buildah pull -q "docker-archive:$(IMAGE_TAR)" >/dev/null; fi; \
	else docker load -q -i "$(IMAGE_TAR)"; fi

test: setup lint pytest pytest-pure  ## everything CI runs (installs the Debian test tools first)

lint:
	$(VENV)/bin/ruff check ocisquash tests bench
	$(VENV)/bin/mypy

pytest:  ## every test, the ones marked slow included (CI runs this; add -m 'not slow' for a quick local run)
	$(PY) -m pytest -q -p no:cacheprovider

# The merge's tests once more on its pure-Python modules (what runs where setup.py could not compile):
# a copy of the package without the extension modules, first on the path (pytest's script, not
# `python -m`, which would put the working tree first); test_compiled.py checks which modules ran.
PURE := $(CURDIR)/.pure
pytest-pure:
	rm -rf $(PURE) && mkdir -p $(PURE) && cp -r ocisquash $(PURE)/ && find $(PURE) -name '*.so' -delete
	PYTHONPATH=$(PURE) OCISQUASH_EXPECT_PURE=1 $(VENV)/bin/pytest -q -p no:cacheprovider tests/test_compiled.py \
		tests/test_merge.py tests/test_merge_properties.py tests/test_fuzz.py tests/test_tar.py

fuzz: setup  ## coverage-guided fuzzing of every reader (atheris), FUZZ_SECONDS each
	$(PY) -m pip install -q -c constraints.txt -e '.[fuzz]'
	$(PY) tests/fuzz/run.py --seconds $${FUZZ_SECONDS:-60}

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .pure build ocisquash_merge__mypyc*.so ocisquash/merge/*.so ocisquash/tar/*.so
BENCH_PYTHON ?=
BENCH_ARGS ?=

bench:  ## benchmark ocisquash against oci-squash, cp and raw codec work (bench/README.md)
	@py="$(BENCH_PYTHON)"; if [ -z "$$py" ]; then py=python3; \
	  [ -x "$(PY)" ] && "$(PY)" -c 'import oci_squash, isal' 2>/dev/null && py="$(PY)"; fi; \
	echo "$$py bench/run.py $(BENCH_ARGS)"; "$$py" bench/run.py $(BENCH_ARGS)
