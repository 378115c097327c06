"""Watch a trained policy: render its evaluation episodes to a GIF (or MP4), and a strip of frames as one PNG.

    python benchmarks/record.py runs/iql__stitch-hopper-medium-v0__s0__...                    # -> <run>/episode.gif
    python benchmarks/record.py runs/<run> --episodes 3 --out hopper.mp4
    python benchmarks/record.py runs/<run> --strip docs/media/hopper.png --out docs/media/hopper.gif

The policy is the run's own `load_policy` (what its evaluation runs), in the run's dataset's environment, reset
with the seeds common/evaluation.py gives the run's evaluation episodes 0, 1, ... (`--seed`: the run's seed by
default), so the episodes shown are the ones its evaluation scored. Episodes are rendered offscreen
(`render_mode="rgb_array"`): MuJoCo tasks (hopper, halfcheetah, walker2d, stitch/pointmaze) through OpenGL, which
on a Linux machine without a display needs EGL (the default here when MUJOCO_GL is unset) or OSMesa
(`MUJOCO_GL=osmesa`); classic-control tasks (CartPole, Acrobot) through pygame.

GIF and PNG are written with Pillow (in requirements.txt). MP4 needs `pip install imageio imageio-ffmpeg`.
Where rendering is not possible, the script says why in one line and what to install.
"""

from __future__ import annotations

import os
import sys

if sys.platform.startswith("linux") and not os.environ.get("MUJOCO_GL"):
    os.environ["MUJOCO_GL"] = "egl"  # offscreen without a display; must be set before MuJoCo is first imported
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")  # pygame (classic control) needs no sound card
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

import dataclasses  # noqa: E402
import math  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import tyro  # noqa: E402
from PIL import Image  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.run_policy import RunError, load_run_policy  # noqa: E402
from common.data import DatasetError, load_dataset  # noqa: E402
from common.evaluation import env_actions, eval_seed, flatten_obs, make_env, observe_step, start_episodes  # noqa: E402

INSTALL_GL = ("on Linux without a display install EGL (apt-get install libegl1; MUJOCO_GL=egl) or OSMesa "
              "(apt-get install libosmesa6; MUJOCO_GL=osmesa)")
INSTALL_MP4 = "pip install imageio imageio-ffmpeg"


class RenderError(RuntimeError):
    """Rendering (or writing the video) is not possible here: the message says why and what to install."""


@dataclasses.dataclass
class Args:
    run: tyro.conf.Positional[str]
    """A run folder (with checkpoint.pt) written by a script in algorithms/."""
    episodes: int = 1
    """Episodes to record, one after another in the video."""
    out: str | None = None
    """Video to write: .gif (Pillow) or .mp4 (imageio-ffmpeg). Default: <run>/episode.gif, unless only --strip
    is given."""
    strip: str | None = None
    """Also write this PNG: --strip-frames frames of the first episode, evenly spaced, side by side."""
    strip_frames: int = 6
    """Frames in the --strip image."""
    seed: int | None = None
    """Evaluation seed of the episodes (common/evaluation.py's seeds); default: the run's seed."""
    every: int | None = None
    """Keep every k-th frame (default: about 30 frames per second of simulated time)."""
    size: int = 320
    """Largest side of the frames in pixels (the renderer's frames are scaled down to it; 0: as rendered)."""
    max_steps: int | None = None
    """Stop each episode after this many steps (default: the environment's time limit)."""


def check_renderer() -> None:
    """MuJoCo reads MUJOCO_GL when it is imported, and refuses a value it does not know."""
    try:
        import mujoco  # noqa: F401
    except ImportError:  # no MuJoCo: only classic-control tasks can be made, nothing to check
        pass
    except RuntimeError as e:
        raise RenderError(f"MuJoCo cannot start its renderer ({e}); {INSTALL_GL}") from None


def render_error(env_id: str, e: BaseException) -> RenderError:
    reason = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
    if isinstance(e, gym.error.DependencyNotInstalled) or "pygame" in str(e):
        hint = "pip install pygame"
    else:
        hint = f"MUJOCO_GL={os.environ.get('MUJOCO_GL', '')!r}; {INSTALL_GL}"
    return RenderError(f"cannot render {env_id} offscreen ({reason}); {hint}")


def record(policy: Callable[[np.ndarray], np.ndarray], env_spec, episodes: int, seed: int, every: int | None = None,
           max_steps: int | None = None) -> tuple[list[list[np.ndarray]], list[float], float]:
    """Frames ([H, W, 3] uint8: the reset, every `every`-th step, the last step) and return of each episode, and the
    frame rate of the kept frames in simulated time. Episode i is the run's evaluation episode i (same reset seed)."""
    env_id = getattr(env_spec, "id", env_spec)
    try:
        env = make_env(env_spec, render_mode="rgb_array")
        env.reset(seed=eval_seed(seed, 0))
        first = env.render()
    except Exception as e:  # no OpenGL, no pygame, ...: one line that says what to install
        raise render_error(env_id, e) from None
    if not (isinstance(first, np.ndarray) and first.ndim == 3):
        raise RenderError(f"{env_id} renders no RGB frames (render() gave {type(first).__name__})")
    fps = float(env.metadata.get("render_fps") or 30)
    every = every or max(1, round(fps / 30))
    all_frames, returns = [], []
    for i in range(episodes):
        obs, _ = env.reset(seed=eval_seed(seed, i))
        frames, total, t, done = [env.render()], 0.0, 0, False
        start_episodes(policy, 1)  # a policy that keeps the episode's history starts a new one
        while not done and (max_steps is None or t < max_steps):
            action = env_actions(np.asarray(policy(flatten_obs(obs)[None])), env.action_space)[0]
            if isinstance(env.action_space, gym.spaces.Discrete):
                action = int(action)
            obs, reward, term, trunc, _ = env.step(action)
            total, t, done = total + float(reward), t + 1, term or trunc
            observe_step(policy, [reward], [done])
            if t % every == 0 or done:  # the last frame too: how the episode ended
                frames.append(env.render())
        all_frames.append(frames)
        returns.append(total)
    env.close()
    return all_frames, returns, fps / every


def resized(frame: np.ndarray, size: int) -> Image.Image:
    image = Image.fromarray(frame)
    if size and max(image.size) > size:
        scale = size / max(image.size)
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                             Image.Resampling.LANCZOS)
    return image


def write_video(frames: list[np.ndarray], path: Path, fps: float, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [resized(f, size) for f in frames]
    if path.suffix.lower() == ".gif":
        # GIF frame times are in 10 ms steps; loop forever
        images[0].save(path, save_all=True, append_images=images[1:], duration=max(20, round(1000 / fps, -1)), loop=0)
    elif path.suffix.lower() == ".mp4":
        try:
            import imageio.v2 as imageio
            import imageio_ffmpeg  # noqa: F401 -- imageio's ffmpeg backend
        except ImportError:
            raise RenderError(f"writing {path.name} needs an MP4 encoder: {INSTALL_MP4} (or write a .gif)") from None
        w, h = images[0].size
        with imageio.get_writer(path, fps=fps, macro_block_size=1, codec="libx264", quality=7) as writer:
            for image in images:
                writer.append_data(np.asarray(image.resize((w - w % 2, h - h % 2))))
    else:
        raise RenderError(f"--out {path}: write a .gif or an .mp4")


def write_strip(frames: list[np.ndarray], path: Path, n: int, size: int) -> None:
    """n frames spread evenly over `frames`, first and last included, side by side in one PNG."""
    picks = [frames[round(i * (len(frames) - 1) / max(1, n - 1))] for i in range(min(n, len(frames)))]
    images = [resized(f, size) for f in picks]
    strip = Image.new("RGB", (sum(im.width for im in images), max(im.height for im in images)), "white")
    x = 0
    for im in images:
        strip.paste(im, (x, 0))
        x += im.width
    path.parent.mkdir(parents=True, exist_ok=True)
    strip.save(path)


def main(args: Args) -> None:
    if args.episodes < 1 or args.strip_frames < 1 or (args.every is not None and args.every < 1):
        raise RunError("--episodes, --strip-frames and --every must be at least 1")
    for name, value, suffixes in (("--out", args.out, (".gif", ".mp4")), ("--strip", args.strip, (".png",))):
        if value is not None and Path(value).suffix.lower() not in suffixes:
            raise RunError(f"{name} {value}: the file must end in {' or '.join(suffixes)}")
    check_renderer()
    run = load_run_policy(args.run)
    dataset = run.args["dataset"]
    try:
        data = load_dataset(dataset)
    except DatasetError as e:
        raise RunError(f"{run.run_dir} was trained on {dataset}, which cannot be loaded here: {e}") from None
    if data.env_spec is None:
        raise RunError(f"{dataset} records no environment, so there is nothing to render")
    seed = run.args.get("seed", 0) if args.seed is None else args.seed
    episodes, returns, fps = record(run.policy, data.env_spec, args.episodes, seed, args.every, args.max_steps)
    for i, ret in enumerate(returns):
        score = math.nan if None in (data.ref_min_score, data.ref_max_score) else data.normalized_score([ret])[0]
        print(f"episode {i} (evaluation seed {eval_seed(seed, i)}): return {ret:.1f}, score {score:.1f}, "
              f"{len(episodes[i])} frames")
    out = args.out if args.out is not None else (None if args.strip else str(run.run_dir / "episode.gif"))
    if out is not None:
        write_video([f for frames in episodes for f in frames], Path(out), fps, args.size)
        print(f"wrote {out} ({sum(map(len, episodes))} frames at {fps:.0f} fps)")
    if args.strip is not None:
        write_strip(episodes[0], Path(args.strip), args.strip_frames, args.size)
        print(f"wrote {args.strip}")


if __name__ == "__main__":
    try:
        main(tyro.cli(Args))
    except (RunError, RenderError) as e:  # bad input, or no way to render here: one clear line, no traceback
        raise SystemExit(f"error: {e}")
