"""The scene family's property counts (tests/test_vad_family.py) for any amount of training video,
any family members and any torch seeds: the figures behind the property tests' comment and
BENCHMARKS.md ("The false-alarm bar, stated for half a minute of training video").

    uv run python -m benchmarks.vad_family_properties [--n-train 8] [--n-frames 80]
        [--members 100-109] [--seeds 0,1,2] [--set KEY=VALUE ...]

Each member is generated at the property size (72 x 108) with `--n-train` training videos and three
test videos of `--n-frames` frames (Test001 a fast mover, Test002 an oversized figure, Test003 no
event), into `--data` (once; a folder already there is reused unless stale), and fitted once per
torch seed with conf/model/aivad.yaml's settings (offline extractors). `--set` overrides a net
setting: a dotted key below `net`, its value read as YAML, e.g. `--set gmm_reg_covar=0.1` or `--set
dwell.window=16`. Per member and seed it reports whether each event lifts its frames above the 95th
percentile of the video's normal frames, whether each event's video passes the training maximum,
and how many of the no-event video's frames pass it; then the totals per seed. The property tests
run members 100-109 with seed 0 at 3 x 40 (the fast mover and oversized figure) and 8 x 80 (the
false-alarm rate).

Held-out members (100-111) are a gate, not a tuning set: look at them only to check a change
already chosen on tuning members (avlab.tasks.vad.family).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from avlab.tasks.vad.family import (
    NO_EVENT,
    event_raises_score,
    fit_property_scenes,
    net_settings,
    seed_list,
)

try:
    from benchmarks.threads import cpu_model
except ModuleNotFoundError:  # run by path: benchmarks/ is on sys.path, the repository root not
    from threads import cpu_model

REPO = Path(__file__).resolve().parents[1]
FAST, OVERSIZED = "Test001", "Test002"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n-train", type=int, default=8, help="training videos per member")
    parser.add_argument("--n-frames", type=int, default=80, help="frames per video")
    parser.add_argument("--members", type=seed_list, default=seed_list("100-109"))
    parser.add_argument(
        "--seeds", type=seed_list, default=seed_list("0,1,2"), help="torch seeds, e.g. 0,1,2"
    )
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--data", type=Path, default=REPO / "data" / "vad_family_properties")
    parser.add_argument("--out", type=Path, help="also write the rows and totals as JSON here")
    args = parser.parse_args()
    seeds = args.seeds
    overrides = args.set
    settings = net_settings(REPO / "conf/model/aivad.yaml", overrides)
    folder = args.data / f"{args.n_train}x{args.n_frames}"
    print(f"CPU: {cpu_model()}", flush=True)
    print(f"{args.n_train} training videos x {args.n_frames} frames, overrides {overrides}")
    rows, totals = [], {}
    for seed in seeds:
        total = dict(fast_seen=0, oversized_seen=0, fast_passes_max=0, oversized_passes_max=0)
        total |= dict(no_event_above_max=0, no_event_frames=0, scenes=0)
        for member in args.members:
            start = time.perf_counter()
            (scene,) = fit_property_scenes(
                folder, [member], args.n_train, args.n_frames, settings, seed
            )
            above, frames = scene.frames_above_training_maximum(NO_EVENT)
            row = {
                "member": member,
                "seed": seed,
                "fast_seen": event_raises_score(scene.video(FAST)),
                "oversized_seen": event_raises_score(scene.video(OVERSIZED)),
                "fast_passes_max": scene.passes_training_maximum(FAST),
                "oversized_passes_max": scene.passes_training_maximum(OVERSIZED),
                "no_event_above_max": above,
                "no_event_frames": frames,
                "train_max": round(scene.train_max, 4),
                "s": round(time.perf_counter() - start, 1),
            }
            rows.append(row)
            for key in total:
                total[key] += 1 if key == "scenes" else int(row[key])
            print(json.dumps(row), flush=True)
        totals[seed] = total
    print(
        "\n| torch seed | fast seen | oversized seen | fast passes max | oversized passes max "
        "| no-event frames above max |\n|---|---|---|---|---|---|"
    )
    for seed, t in totals.items():
        n = t["scenes"]
        rate = t["no_event_above_max"] / max(t["no_event_frames"], 1)
        print(
            f"| {seed} | {t['fast_seen']}/{n} | {t['oversized_seen']}/{n} | "
            f"{t['fast_passes_max']}/{n} | {t['oversized_passes_max']}/{n} | "
            f"{t['no_event_above_max']} of {t['no_event_frames']} ({rate:.1%}) |"
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        record = {"cpu": cpu_model(), "n_train": args.n_train, "n_frames": args.n_frames}
        record |= {"overrides": overrides, "rows": rows, "totals": totals}
        args.out.write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
