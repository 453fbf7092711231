# The container image, built and run for real (included by the top-level Makefile; docs/image.md).
#
#   make image        build the Dockerfile: `docker build` where a Docker daemon answers, else
#                     buildah (--isolation chroot, no daemon); a base image that cannot be pulled
#                     is stood in for from Debian packages (deploy/image/standin-base.sh)
#   make image-test   build, then run the image as Kubernetes runs it (podman: read-only root,
#                     no capabilities, uid 10001) and check it (tests/test_image.py)
#   make image-clean  remove the image, its build cache and the stand-in base
#
# IMAGE=name  CONTAINER_ENGINE=auto|docker|buildah  BASE_IMAGE_FALLBACK=auto|standin|never
IMAGE ?= autogen-service
IMAGE_VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -n 1)
# The dev overlay runs `autogen-service:dev` (k8s/overlays/dev/kustomization.yaml).
IMAGE_TAGS ?= $(IMAGE):$(IMAGE_VERSION) $(IMAGE):dev
IMAGE_APT_PACKAGES := buildah podman runc mmdebstrap
export CONTAINER_ENGINE BASE_IMAGE_FALLBACK

.PHONY: image image-test image-deps image-clean

## image-deps: the Debian packages that build and run the image without a daemon (buildah, podman, runc, mmdebstrap)
image-deps:
	@missing=""; \
	for pkg in $(IMAGE_APT_PACKAGES); do dpkg-query -W -f='$${Status}' "$$pkg" 2>/dev/null | grep -q "ok installed" || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing with apt:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

## image: build the Dockerfile into $(IMAGE):$(IMAGE_VERSION) and $(IMAGE):dev (no Docker daemon needed)
image: image-deps
	PYTHON=$(PYTHON) deploy/image/build.sh $(IMAGE_TAGS)

## image-test: build, run the image read-only, without capabilities, as uid 10001; check health, auth, chat, layers
image-test: $(STAMP) image
	IMAGE_UNDER_TEST=$(firstword $(IMAGE_TAGS)) $(BIN)/python -m pytest tests/test_image.py -p no:cacheprovider $(PYTEST_ARGS)
	@podman image inspect --format '{{.Size}} {{index .Labels "io.autogen-service.standin-for"}}' $(firstword $(IMAGE_TAGS)) \
	  | awk '{printf "image-test: %s is %.0f MB, on %s\n", "$(firstword $(IMAGE_TAGS))", $$1 / 1000000, \
	    ($$2 == "" ? "its pulled base" : "the Debian stand-in for " $$2)}'

## image-clean: remove the service image, the build's layer cache and the base images (stand-in or pulled)
image-clean:
	-podman rmi --force $(IMAGE_TAGS) 2>/dev/null
	-podman rmi --force $$(awk 'toupper($$1) == "FROM" {print $$2}' Dockerfile | sort -u) 2>/dev/null
	-buildah rm --all >/dev/null 2>&1
	-podman image prune --force >/dev/null
