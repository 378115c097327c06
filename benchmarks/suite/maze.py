"""PointMaze datasets for the stitch suite, built the way D4RL built maze2d: a planner, a PD controller, random goals.

`stitch/pointmaze/{umaze,medium,large}-v0` (sparse reward) and `...-dense-v0` (dense reward) hold what a
point mass did in gymnasium-robotics' PointMaze (`PointMaze_UMaze-v3`, `_Medium-v3`, `_Large-v3`) while a
waypoint controller drove it from one randomly chosen goal cell to the next: the evaluation's goal cell is just
one of the open cells it may draw, and the data holds no more of the evaluation's route than of any other.
Offline RL has to stitch pieces of these paths into the way from the evaluation's start to its goal.

Behaviour (D4RL's scripts/generation/generate_maze2d_datasets.py and d4rl/pointmaze/waypoint_controller.py,
and Minari's pointmaze scripts, which redo it in gymnasium-robotics):
 1. A goal cell is drawn uniformly among the open cells other than the one the ball is in; its position is
    the cell's centre plus U(-0.25, 0.25) per coordinate (gymnasium-robotics' goal noise).
 2. The planner finds the shortest path over the grid of open cells (breadth-first search from the goal,
    4-connected; the path D4RL's Q-iteration on the same grid follows). Every cell after the current one
    is a waypoint at its centre minus U(0, 0.2) per coordinate (as in D4RL); the last waypoint is the goal.
 3. A PD controller steers to the current waypoint, a = 10 (waypoint - position) - 1 velocity (D4RL's
    p_gain 10, d_gain -1), and moves on to the next waypoint within 0.1 of it. Gaussian noise N(0, 0.5^2)
    is added to every action, which is then clipped to [-1, 1] (D4RL's --noisy, Minari's scripts).
 4. Within 0.45 of the goal (the environment's success radius) a new goal is drawn and planned from where
    the ball is, without any reset: logging is continuous across goals. A goal not reached within one
    episode length is abandoned for a new one (as D4RL's script does).

Data format and evaluation (the choices this suite makes):
 * The environment is the PointMaze env on a map with one goal cell `g` and one reset cell `r` (the goal
   cells are Minari's evaluation goals, which are D4RL's maze2d targets; the reset cells are the far end of
   the maze, where AntMaze starts), `continuing_task=True, reset_target=False`: reaching the goal neither
   ends the episode nor moves the goal, and every step within 0.45 of it earns reward 1 (sparse) or every
   step earns exp(-distance) (dense, like D4RL's dense relabelling). The data is logged in that very
   environment, so its `desired_goal` is the evaluation goal and its rewards are the environment's own,
   i.e. D4RL's relabelling of the data for the evaluation target, exactly and at the stored states.
 * Observations are the environment's dict (achieved_goal, desired_goal, observation = x, y, vx, vy), stored
   as float64 like the environment returns them; `common.data` flattens them in key order to 8 features,
   as `common.evaluation` flattens the environment's observations.
 * The stream is cut into episodes of the evaluation's length (`max_episode_steps`: 300 / 600 / 800 as
   registered and as Minari evaluates), each marked `truncations=True` at its last step; there are no
   terminations. At each cut the evaluation goal's position noise is drawn again (as each evaluation
   reset draws it), so the data shows the goal positions evaluation will. D4RL cut maze2d only at goal
   switches and Minari cuts at every goal reached; fixed lengths make episode returns comparable to
   evaluation returns.
 * Datasets hold 1M steps (Minari's size). For parallel builds the stream is made of independent segments
   of SEGMENT_STEPS steps (a multiple of every episode length); each segment starts with a reset at a
   random open cell and then logs continuously. Everything random comes from seeds derived from
   (seed, maze, segment), so the same seed gives identical arrays for any number of workers. The dense
   dataset of a maze is its sparse dataset with dense rewards (same states and actions).
 * Reference scores (D4RL style, 100 episodes each in the evaluation environment, reset at `r`):
   ref_min_score from uniform random actions, ref_max_score from the planner + PD controller driving to
   the evaluation goal without action noise.

Usage:
    python benchmarks/suite/build.py stitch/pointmaze/umaze-v0  # build one dataset (see build.py)
    python benchmarks/suite/maze.py umaze                 # the map, the planner's path, reference scores
    python benchmarks/suite/maze.py large --steps 20000   # also the behaviour's goals per 1k steps
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import io
import math
import os
import sys
import time
import zlib

import gymnasium as gym
import numpy as np

if __name__ == "__main__":  # `python benchmarks/suite/maze.py`: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from common import evaluation  # noqa: E402

# ----------------------------------------------------------------------------------------------
# Mazes
# ----------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Maze:
    name: str
    env_id: str
    """Sparse-reward gymnasium-robotics id; the dense one is its `Dense` variant."""
    layout: tuple[str, ...]
    """Rows of the map: '#' wall, '.' open, 'G' the evaluation goal cell, 'R' the evaluation reset cell."""
    episode_steps: int
    """The evaluation's max_episode_steps (the env's registered limit) and the length of logged episodes."""

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.layout), len(self.layout[0])

    def cell(self, char: str) -> tuple[int, int]:
        return next((i, j) for i, row in enumerate(self.layout) for j, c in enumerate(row) if c == char)

    @property
    def goal_cell(self) -> tuple[int, int]:
        return self.cell("G")

    @property
    def reset_cell(self) -> tuple[int, int]:
        return self.cell("R")

    @property
    def open_cells(self) -> list[tuple[int, int]]:
        return [(i, j) for i, row in enumerate(self.layout) for j, c in enumerate(row) if c != "#"]

    def maze_map(self) -> list[list[int | str]]:
        """The layout as gymnasium-robotics' `maze_map` (1 wall, 0 open, 'g' goal, 'r' reset)."""
        return [[{"#": 1, ".": 0, "G": "g", "R": "r"}[c] for c in row] for row in self.layout]

    def cell_xy(self, cell: tuple[int, int]) -> np.ndarray:
        """Centre of a (row, col) cell in the simulation's coordinates (maze_size_scaling 1, y up)."""
        rows, cols = self.shape
        return np.array([cell[1] + 0.5 - cols / 2, rows / 2 - cell[0] - 0.5])

    def xy_cell(self, xy: np.ndarray) -> tuple[int, int]:
        """The (row, col) cell holding position xy; the nearest open cell if xy is in a wall (the ball can
        press a little into one)."""
        rows, cols = self.shape
        cell = int(np.floor(rows / 2 - xy[1])), int(np.floor(xy[0] + cols / 2))
        if 0 <= cell[0] < rows and 0 <= cell[1] < cols and self.layout[cell[0]][cell[1]] != "#":
            return cell
        return min(self.open_cells, key=lambda c: float(np.hypot(*(self.cell_xy(c) - xy))))


MAZES = {
    "umaze": Maze("umaze", "PointMaze_UMaze-v3", (
        "#####",
        "#G..#",
        "###.#",
        "#R..#",
        "#####"), 300),
    "medium": Maze("medium", "PointMaze_Medium-v3", (
        "########",
        "#R.##..#",
        "#..#...#",
        "##...###",
        "#..#...#",
        "#.#..#.#",
        "#...#.G#",
        "########"), 600),
    "large": Maze("large", "PointMaze_Large-v3", (
        "############",
        "#R...#.....#",
        "#.##.#.#.#.#",
        "#......#...#",
        "#.####.###.#",
        "#..#.#.....#",
        "##.#.#.#.###",
        "#..#...#.G.#",
        "############"), 800),
}
VARIANTS = ("", "-dense")  # sparse, dense reward
MAZE_IDS = tuple(f"stitch/pointmaze/{name}{variant}-v0" for name in MAZES for variant in VARIANTS)

STEPS = 1_000_000        # per dataset, as Minari's pointmaze datasets
SEGMENT_STEPS = 96_000   # independent continuous segments (a multiple of 300, 600 and 800)
REF_EPISODES = 100       # episodes per reference score
REF_CHUNK = 25           # reference episodes per parallel task
ACTION_NOISE = 0.5       # std of the Gaussian noise on the behaviour's actions
SUCCESS_RADIUS = 0.45    # gymnasium-robotics' goal radius (D4RL: 0.5)


def parse_id(dataset_id: str) -> tuple[Maze, bool]:
    """`stitch/pointmaze/medium-dense-v0` -> (MAZES["medium"], True); ValueError for any other id."""
    if dataset_id not in MAZE_IDS:
        raise ValueError(f"unknown pointmaze dataset id {dataset_id!r}; the suite has: {', '.join(MAZE_IDS)}")
    name = dataset_id.split("/")[-1].rsplit("-v", 1)[0]
    return MAZES[name.removesuffix("-dense")], name.endswith("-dense")


def _import_robotics() -> None:
    """Register gymnasium-robotics' environments, without the notice it prints on import (about Adroit)."""
    if "gymnasium_robotics" not in sys.modules:
        with contextlib.redirect_stderr(io.StringIO()):
            import gymnasium_robotics  # noqa: F401


def env_spec(maze: Maze, dense: bool = False) -> gym.envs.registration.EnvSpec:
    """The evaluation environment, stored with the dataset: the maze with its goal and reset cell."""
    _import_robotics()
    env_id = maze.env_id.replace("-v", "Dense-v") if dense else maze.env_id
    spec = gym.spec(env_id)
    if spec.max_episode_steps != maze.episode_steps:
        raise ValueError(f"{env_id} is registered with max_episode_steps={spec.max_episode_steps}, "
                         f"expected {maze.episode_steps}")
    registered = [["#" if c == 1 else "." for c in row] for row in spec.kwargs["maze_map"]]
    if registered != [[c if c == "#" else "." for c in row] for row in maze.layout]:
        raise ValueError(f"{env_id}'s registered maze differs from the {maze.name} layout in benchmarks/suite/maze.py")
    return dataclasses.replace(spec, kwargs={**spec.kwargs, "maze_map": maze.maze_map(), "continuing_task": True,
                                             "reset_target": False})


def make_env(maze: Maze, dense: bool = False, time_limit: bool = True) -> gym.Env:
    """The evaluation env (`time_limit=False`: without its time limit, for logging the data stream)."""
    spec = env_spec(maze, dense)
    if not time_limit:
        spec = dataclasses.replace(spec, max_episode_steps=None)
    return evaluation.make_env(spec, disable_env_checker=True)


# ----------------------------------------------------------------------------------------------
# Planner and controller
# ----------------------------------------------------------------------------------------------

def next_cells(maze: Maze, goal: tuple[int, int]) -> dict[tuple[int, int], tuple[int, int]]:
    """For every open cell, the neighbour one step closer to `goal` on a shortest path (breadth-first
    search from the goal over 4-connected open cells; ties go to the first of up, down, left, right)."""
    step, frontier = {goal: goal}, collections.deque([goal])
    is_open = set(maze.open_cells)
    while frontier:
        cell = frontier.popleft()
        for di, dj in ((-1, 0), (1, 0), (0, -1), (0, 1)):
            n = (cell[0] + di, cell[1] + dj)
            if n in is_open and n not in step:
                step[n] = cell
                frontier.append(n)
    return step


def plan(maze: Maze, start: tuple[int, int], goal: tuple[int, int],
         table: dict | None = None) -> list[tuple[int, int]]:
    """The cells after `start` on a shortest path to `goal` (empty when start == goal)."""
    step = next_cells(maze, goal) if table is None else table[goal]
    if start not in step:
        raise ValueError(f"no path from cell {start} to cell {goal} in the {maze.name} maze")
    path = []
    while start != goal:
        start = step[start]
        path.append(start)
    return path


class WaypointController:
    """D4RL's maze2d controller: waypoints along the planner's path, followed with a PD law.

    `set_goal(position, goal_xy)` plans from the ball's cell; `act(x, y, vx, vy)` returns the PD action
    toward the current waypoint (unclipped, without noise), moving on within `waypoint_radius` of it.
    """

    def __init__(self, maze: Maze, rng: np.random.Generator, p_gain: float = 10.0, d_gain: float = -1.0,
                 waypoint_radius: float = 0.1, jitter: float = 0.2):
        self.maze, self.rng = maze, rng
        self.p_gain, self.d_gain, self.waypoint_radius, self.jitter = p_gain, d_gain, waypoint_radius, jitter
        self.tables = {cell: next_cells(maze, cell) for cell in maze.open_cells}
        self.waypoints: list[tuple[float, float]] = []
        self.index = 0

    def set_goal(self, position: np.ndarray, goal_xy: np.ndarray) -> None:
        path = plan(self.maze, self.maze.xy_cell(position), self.maze.xy_cell(goal_xy), self.tables)
        waypoints = [self.maze.cell_xy(c) - self.rng.uniform(size=2) * self.jitter for c in path[:-1]]
        self.waypoints = [(float(x), float(y)) for x, y in [*waypoints, goal_xy]]
        self.index = 0

    def act(self, x: float, y: float, vx: float, vy: float) -> tuple[float, float]:
        """PD action (unclipped, without noise) at position (x, y) and velocity (vx, vy)."""
        tx, ty = self.waypoints[self.index]
        if self.index < len(self.waypoints) - 1 and math.hypot(tx - x, ty - y) <= self.waypoint_radius:
            self.index += 1
            tx, ty = self.waypoints[self.index]
        return self.p_gain * (tx - x) + self.d_gain * vx, self.p_gain * (ty - y) + self.d_gain * vy


# ----------------------------------------------------------------------------------------------
# Rollouts: data segments and reference episodes (each a pure function of its arguments)
# ----------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Episode:
    """One logged episode, in the fields `suite._EpisodeWriter` writes."""
    seed: int | None                       # the env.reset seed (None: continues the previous episode)
    observations: dict[str, np.ndarray]    # each [T + 1, ...] float64
    actions: np.ndarray                    # [T, 2] float32
    rewards: np.ndarray                    # [T] float64
    terminations: np.ndarray               # [T] bool, all False
    truncations: np.ndarray                # [T] bool, True at the last step

    def __len__(self) -> int:
        return len(self.rewards)


@dataclasses.dataclass
class Segment:
    episodes: list[Episode]
    goals_reached: list[tuple[int, int]]   # the behaviour goal cells reached, in order
    goals_abandoned: int                   # goals not reached within one episode length


def _seeds(seed: int, maze: Maze, stream: str, index: int) -> np.random.SeedSequence:
    return np.random.SeedSequence([seed, zlib.crc32(f"pointmaze/{maze.name}/{stream}".encode()), index])


def run_segment(maze: Maze, dense: bool, seed: int, segment: int, n_steps: int) -> Segment:
    """Segment `segment` of the data stream: a reset at a random open cell, then `n_steps` continuous steps
    of the noisy controller driving to random goal cells, cut into episodes of `maze.episode_steps`."""
    reset_ss, plan_ss, noise_ss = _seeds(seed, maze, "data", segment).spawn(3)
    plan_rng, noise_rng = np.random.default_rng(plan_ss), np.random.default_rng(noise_ss)
    reset_seed = int(reset_ss.generate_state(1)[0])
    env = make_env(maze, dense, time_limit=False)
    base = env.unwrapped
    cells = maze.open_cells
    start = cells[plan_rng.integers(len(cells))]
    obs, _ = env.reset(seed=reset_seed, options={"reset_cell": np.array(start)})
    goal_xy = maze.cell_xy(maze.goal_cell)
    controller = WaypointController(maze, plan_rng)

    def new_goal(position: np.ndarray) -> np.ndarray:
        here = maze.xy_cell(position)
        choices = [c for c in cells if c != here]
        goal = maze.cell_xy(choices[plan_rng.integers(len(choices))]) + plan_rng.uniform(-0.25, 0.25, 2)
        controller.set_goal(position, goal)
        return goal

    behaviour_goal, goal_steps = new_goal(obs["achieved_goal"]), 0
    gx, gy = behaviour_goal
    reached, abandoned, episodes = [], 0, []
    length = maze.episode_steps
    for e in range(-(-n_steps // length)):
        n = min(length, n_steps - e * length)
        if e > 0:  # a new episode: draw the evaluation goal's position noise again, as a reset does
            base.goal = base.add_xy_position_noise(goal_xy.copy())
            base.update_target_site_pos()
        desired = base.goal.copy()
        states = np.empty((n + 1, 4))  # x, y, vx, vy; achieved_goal is x, y and desired_goal is fixed
        states[0] = obs["observation"]
        actions, rewards = np.empty((n, 2), np.float32), np.empty(n)
        noise = noise_rng.normal(0.0, ACTION_NOISE, (n, 2))
        for t in range(n):
            x, y, vx, vy = states[t].tolist()
            ax, ay = controller.act(x, y, vx, vy)
            actions[t] = min(max(ax + noise[t, 0], -1.0), 1.0), min(max(ay + noise[t, 1], -1.0), 1.0)
            obs, rewards[t], terminated, truncated, _ = env.step(actions[t])
            if terminated or truncated:
                raise RuntimeError(f"{maze.env_id} ended an episode; the data env must be a continuing task")
            states[t + 1] = obs["observation"]
            goal_steps += 1
            if math.hypot(states[t + 1, 0] - gx, states[t + 1, 1] - gy) <= SUCCESS_RADIUS:
                reached.append(maze.xy_cell(behaviour_goal))
                behaviour_goal, goal_steps = new_goal(states[t + 1, :2]), 0
            elif goal_steps >= length:
                abandoned += 1
                behaviour_goal, goal_steps = new_goal(states[t + 1, :2]), 0
            gx, gy = behaviour_goal
        if not np.array_equal(obs["desired_goal"], desired) or not np.array_equal(obs["achieved_goal"], states[n, :2]):
            raise RuntimeError(f"{maze.env_id}: observations are not (x, y, vx, vy) with a fixed desired_goal")
        truncations = np.zeros(n, bool)
        truncations[-1] = True
        observations = {"achieved_goal": states[:, :2].copy(), "desired_goal": np.repeat(desired[None], n + 1, 0),
                        "observation": states}
        episodes.append(Episode(reset_seed if e == 0 else None, observations, actions, rewards, np.zeros(n, bool),
                                truncations))
    env.close()
    return Segment(episodes, reached, abandoned)


def reference_returns(maze: Maze, dense: bool, policy: str, seed: int, first: int, n: int) -> list[float]:
    """Returns of evaluation episodes first .. first+n-1 in the evaluation env: `policy` is "random"
    (uniform actions) or "planner" (the controller driving to the evaluation goal, no action noise)."""
    if policy not in ("random", "planner"):
        raise ValueError(f"policy must be 'random' or 'planner', got {policy!r}")
    env = make_env(maze, dense)
    returns = []
    for k in range(first, first + n):
        reset_ss, rng_ss = _seeds(seed, maze, f"ref-{policy}", k).spawn(2)
        rng = np.random.default_rng(rng_ss)
        obs, _ = env.reset(seed=int(reset_ss.generate_state(1)[0]))
        controller = WaypointController(maze, rng)
        if policy == "planner":
            controller.set_goal(obs["achieved_goal"], obs["desired_goal"])
        total, done = 0.0, False
        while not done:
            if policy == "random":
                a = rng.uniform(-1.0, 1.0, 2).astype(np.float32)
            else:
                a = np.clip(controller.act(*obs["observation"].tolist()), -1.0, 1.0).astype(np.float32)
            obs, r, terminated, truncated, _ = env.step(a)
            total += float(r)
            done = terminated or truncated
        returns.append(total)
    env.close()
    return returns


@dataclasses.dataclass(frozen=True)
class MazeTask:
    """One unit of a build for a worker process: a data segment or a chunk of reference episodes."""
    maze: str
    dense: bool
    seed: int
    kind: str     # "data", "random" or "planner"
    index: int    # segment, or first reference episode
    n: int        # steps, or reference episodes


def build_tasks(maze: Maze, dense: bool, seed: int, n_steps: int, ref_episodes: int) -> list[MazeTask]:
    """The reference chunks (first, they are short), then the data segments in dataset order."""
    tasks = [MazeTask(maze.name, dense, seed, policy, first, min(REF_CHUNK, ref_episodes - first))
             for policy in ("random", "planner") for first in range(0, ref_episodes, REF_CHUNK)]
    tasks += [MazeTask(maze.name, dense, seed, "data", s, min(SEGMENT_STEPS, n_steps - s * SEGMENT_STEPS))
              for s in range(-(-n_steps // SEGMENT_STEPS))]
    return tasks


def run_task(task: MazeTask) -> Segment | list[float]:
    maze = MAZES[task.maze]
    if task.kind == "data":
        return run_segment(maze, task.dense, task.seed, task.index, task.n)
    return reference_returns(maze, task.dense, task.kind, task.seed, task.index, task.n)


def describe(maze: Maze, dense: bool) -> tuple[str, str]:
    """(policy label, description) for the dataset's metadata and card."""
    label = (f"grid planner + PD controller to random goal cells, N(0, {ACTION_NOISE}^2) action noise, "
             f"continuous logging")
    reward = "exp(-distance to the goal) every step" if dense else f"1 within {SUCCESS_RADIUS} of the goal, else 0"
    description = (
        f"Stitch suite, D4RL maze2d-style data in {env_spec(maze, dense).id} ({maze.name} maze): {label}, cut into "
        f"episodes of {maze.episode_steps} steps (truncations, no terminations). The behaviour's goals are "
        f"uniformly random open cells, not the evaluation goal (cell {maze.goal_cell}); observations carry that "
        f"goal as desired_goal and rewards are the environment's own for it: {reward}. Evaluation resets at cell "
        f"{maze.reset_cell}. Reference scores: mean returns over {REF_EPISODES} evaluation episodes of uniform "
        f"random actions (ref_min) and of the planner + controller driving to the goal without noise (ref_max).")
    return label, description


# ----------------------------------------------------------------------------------------------
# A quick look without building: python benchmarks/suite/maze.py <maze>
# ----------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Show a PointMaze task of the stitch suite: its map, the "
                                                 "planner's path, reference returns, the behaviour's coverage.")
    parser.add_argument("maze", choices=sorted(MAZES), help="which maze")
    parser.add_argument("--dense", action="store_true", help="the dense-reward variant")
    parser.add_argument("--episodes", type=int, default=20, help="reference episodes per policy")
    parser.add_argument("--steps", type=int, default=0, help="also run this many behaviour steps (one segment)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.episodes < 1 or args.steps < 0:
        raise SystemExit("error: --episodes must be at least 1 and --steps at least 0")
    maze = MAZES[args.maze]
    print("\n".join(maze.layout))
    path = plan(maze, maze.reset_cell, maze.goal_cell)
    print(f"evaluation: reset {maze.reset_cell} -> goal {maze.goal_cell}, {len(path)} cells, "
          f"{maze.episode_steps} steps per episode")
    for policy in ("random", "planner"):
        t = time.time()
        r = np.array(reference_returns(maze, args.dense, policy, args.seed, 0, args.episodes))
        print(f"{policy:8} return {r.mean():7.1f} ± {r.std():5.1f} over {args.episodes} episodes "
              f"({time.time() - t:.1f} s)")
    if args.steps:
        t = time.time()
        seg = run_segment(maze, args.dense, args.seed, 0, args.steps)
        returns = [ep.rewards.sum() for ep in seg.episodes]
        print(f"behaviour: {args.steps} steps in {time.time() - t:.1f} s, {len(seg.goals_reached)} goals reached "
              f"({1000 * len(seg.goals_reached) / args.steps:.1f} per 1k steps), {seg.goals_abandoned} abandoned, "
              f"{len(set(seg.goals_reached))} of {len(maze.open_cells)} cells reached, episode return "
              f"{np.mean(returns):.1f} ± {np.std(returns):.1f}")


if __name__ == "__main__":
    main()
