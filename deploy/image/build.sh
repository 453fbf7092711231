#!/usr/bin/env bash
# Build the service image from the Dockerfile, unchanged (`make image`; docs/image.md).
#
#   deploy/image/build.sh IMAGE:TAG [IMAGE:TAG...]
#
# Engine (CONTAINER_ENGINE=auto|docker|buildah, default auto): `docker build` where a Docker
# daemon answers, else Debian's buildah with `--isolation chroot` (no daemon, no user
# namespaces), in the storage podman uses (`make image-test`).
#
# Base images (BASE_IMAGE_FALLBACK=auto|standin|never, default auto; buildah only): a base
# already in local storage is used as it is; otherwise it is pulled, and where that fails (no
# registry, as on a closed build machine) deploy/image/standin-base.sh builds a stand-in from
# Debian packages under the base's name. `standin` skips the pull, `never` fails instead.
#
# pip inside the build reaches the index as the host's pip does: deploy/image/pip_build_config.py
# turns the host's pip settings into the `pip.conf` and `pip-ca.pem` build secrets, mounted for
# the pip steps only. Labels: VERSION from pyproject.toml, REVISION and CREATED from the HEAD
# commit (so an unchanged tree rebuilds from the layer cache).
set -euo pipefail
cd "$(dirname "$0")/../.."

[ $# -ge 1 ] || { echo "usage: $0 IMAGE:TAG [IMAGE:TAG...]" >&2; exit 2; }
tags=("$@")
engine=${CONTAINER_ENGINE:-auto}
fallback=${BASE_IMAGE_FALLBACK:-auto}
python=${PYTHON:-python3}
dockerfile=Dockerfile

if [ "$engine" = auto ]; then
  if command -v docker >/dev/null && timeout 20 docker info >/dev/null 2>&1; then engine=docker; else engine=buildah; fi
fi
command -v "$engine" >/dev/null || { echo "image: $engine not found (make image-deps installs buildah)" >&2; exit 1; }

version=$("$python" -c "import tomllib; print(tomllib.load(open('pyproject.toml', 'rb'))['project']['version'])")
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
created=$(TZ=UTC git log -1 --format=%cd --date=format-local:%Y-%m-%dT%H:%M:%SZ 2>/dev/null || echo unknown)

# The base images: each FROM that does not name an earlier stage.
mapfile -t bases < <(awk 'toupper($1) == "FROM" {
    image = $2; for (i = 2; i <= NF; i++) if ($i !~ /^--/) { image = $i; break }
    if (!(image in stage)) print image
    for (i = 1; i < NF; i++) if (toupper($i) == "AS") stage[$(i + 1)] = 1
  }' "$dockerfile" | sort -u)

if [ "$engine" = buildah ]; then
  for base in "${bases[@]}"; do
    if info=$(buildah inspect --type image "$base" 2>/dev/null); then
      what=""
      ! grep -q io.autogen-service.standin-for <<<"$info" || what=" (the Debian stand-in, docs/image.md)"
      echo "image: base $base is in local storage$what" >&2
      continue
    fi
    case "$fallback" in
      auto)
        if timeout 300 buildah pull --quiet "$base" >/dev/null; then continue; fi
        echo "image: $base cannot be pulled; building the Debian stand-in (docs/image.md)" >&2
        deploy/image/standin-base.sh "$base" ;;
      standin) deploy/image/standin-base.sh "$base" ;;
      never) buildah pull --quiet "$base" >/dev/null ;;
      *) echo "image: BASE_IMAGE_FALLBACK must be auto, standin or never" >&2; exit 2 ;;
    esac
  done
fi

secrets=$(mktemp -d)
trap 'rm -rf "$secrets"' EXIT
ca=$("$python" deploy/image/pip_build_config.py --python "$python" "$secrets")
secret_args=(--secret "id=pip.conf,src=$secrets/pip.conf")
[ -z "$ca" ] || secret_args+=(--secret "id=pip-ca.pem,src=$ca")

tag_args=()
for tag in "${tags[@]}"; do tag_args+=(--tag "$tag"); done
build_args=(--build-arg "VERSION=$version" --build-arg "REVISION=$revision" --build-arg "CREATED=$created")

start=$(date +%s)
if [ "$engine" = docker ]; then
  DOCKER_BUILDKIT=1 docker build "${secret_args[@]}" "${build_args[@]}" "${tag_args[@]}" -f "$dockerfile" .
  size=$(docker image inspect --format '{{.Size}}' "${tags[0]}")
else
  # --format docker keeps the HEALTHCHECK (the OCI image format has none); --layers caches
  # each step, so a source change rebuilds only the last layers.
  buildah bud --isolation chroot --pull=never --layers --format docker \
    "${secret_args[@]}" "${build_args[@]}" "${tag_args[@]}" -f "$dockerfile" .
  size=$(podman image inspect --format '{{.Size}}' "${tags[0]}" 2>/dev/null || echo 0)
fi
echo "image: built ${tags[*]} with $engine in $(($(date +%s) - start)) s, $((size / 1000000)) MB" >&2
