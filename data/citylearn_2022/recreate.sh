#!/usr/bin/env bash
# Re-create data/citylearn_2022/ from the CityLearn 2.0.0 wheel (MIT licence), so
# anyone can verify that the shipped files are the upstream ones, byte for byte.
#   bash data/citylearn_2022/recreate.sh            # overwrite the shipped copy
#   bash data/citylearn_2022/recreate.sh --check    # compare only, exit 1 on a difference
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m pip download -q --no-deps --dest "$work" citylearn==2.0.0
wheel="$(ls "$work"/[Cc]ity[Ll]earn-2.0.0-*.whl)"
src=citylearn/data/citylearn_challenge_2022_phase_all
(cd "$work" && python3 -m zipfile -e "$wheel" unpacked >/dev/null)
files=(schema.json pricing.csv carbon_intensity.csv weather.csv)
for i in $(seq 1 17); do files+=("Building_$i.csv"); done
status=0
for f in "${files[@]}"; do
  if [[ "${1:-}" == "--check" ]]; then
    if ! cmp -s "$work/unpacked/$src/$f" "$here/$f"; then echo "differs: $f"; status=1; fi
  else
    cp "$work/unpacked/$src/$f" "$here/$f"
  fi
done
cp "$work/unpacked/CityLearn-2.0.0.dist-info/LICENSE" "$work/LICENSE.upstream"
if [[ "${1:-}" == "--check" ]]; then
  cmp -s "$work/LICENSE.upstream" "$here/LICENSE" || { echo "differs: LICENSE"; status=1; }
  [[ $status == 0 ]] && echo "data/citylearn_2022 matches the CityLearn 2.0.0 wheel"
else
  cp "$work/LICENSE.upstream" "$here/LICENSE"
  echo "wrote ${#files[@]} files and LICENSE to $here"
fi
exit $status
