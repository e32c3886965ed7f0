"""Facts about the Procgen benchmark: games, options and the paper's score normalization.

Pure data and arithmetic: importing this module starts nothing.
"""

from __future__ import annotations

import math

GAMES: tuple[str, ...] = (
    "bigfish",
    "bossfight",
    "caveflyer",
    "chaser",
    "climber",
    "coinrun",
    "dodgeball",
    "fruitbot",
    "heist",
    "jumper",
    "leaper",
    "maze",
    "miner",
    "ninja",
    "plunder",
    "starpilot",
)

# Procgen's own integer codes for `distribution_mode` (procgen/env.py: DISTRIBUTION_MODE_DICT).
DISTRIBUTION_MODES: dict[str, int] = {
    "easy": 0,
    "hard": 1,
    "extreme": 2,
    "memory": 10,
    "exploration": 20,
}

# The games that implement the two special modes (Procgen README, "Environment options").
MODE_GAMES: dict[str, frozenset[str]] = {
    "exploration": frozenset({"coinrun", "caveflyer", "leaper", "jumper", "maze", "heist"}),
    "memory": frozenset({"dodgeball", "heist", "maze", "miner", "caveflyer", "jumper"}),
}

NUM_ACTIONS = 15
FRAME_SHAPE = (3, 64, 64)  # channel-first RGB, uint8

# (R_min, R_max) per game and mode, from Cobbe et al. 2020, "Leveraging Procedural Generation
# to Benchmark Reinforcement Learning", appendix table "Normalization constants".
# Jumper and leaper on easy: the paper gives R_min = 3 for both, and that is what we use.
# Some codebases copy the hard values (jumper 1, leaper 1.5) into the easy column; scores
# from those are not comparable with ours for these two games.
NORMALIZATION: dict[str, dict[str, tuple[float, float]]] = {
    "easy": {
        "bigfish": (1.0, 40.0),
        "bossfight": (0.5, 13.0),
        "caveflyer": (3.5, 12.0),
        "chaser": (0.5, 13.0),
        "climber": (2.0, 12.6),
        "coinrun": (5.0, 10.0),
        "dodgeball": (1.5, 19.0),
        "fruitbot": (-1.5, 32.4),
        "heist": (3.5, 10.0),
        "jumper": (3.0, 10.0),
        "leaper": (3.0, 10.0),
        "maze": (5.0, 10.0),
        "miner": (1.5, 13.0),
        "ninja": (3.5, 10.0),
        "plunder": (4.5, 30.0),
        "starpilot": (2.5, 64.0),
    },
    "hard": {
        "bigfish": (0.0, 40.0),
        "bossfight": (0.5, 13.0),
        "caveflyer": (2.0, 13.4),
        "chaser": (0.5, 14.2),
        "climber": (1.0, 12.6),
        "coinrun": (5.0, 10.0),
        "dodgeball": (1.5, 19.0),
        "fruitbot": (-0.5, 27.2),
        "heist": (2.0, 10.0),
        "jumper": (1.0, 10.0),
        "leaper": (1.5, 10.0),
        "maze": (4.0, 10.0),
        "miner": (1.5, 20.0),
        "ninja": (2.0, 10.0),
        "plunder": (3.0, 30.0),
        "starpilot": (1.5, 35.0),
    },
}


def normalized_score(episode_return: float, game: str, distribution_mode: str) -> float:
    """(R - R_min) / (R_max - R_min) with the paper's constants; NaN where the paper has none."""
    bounds = NORMALIZATION.get(distribution_mode, {}).get(game)
    if bounds is None or math.isnan(episode_return):
        return math.nan
    r_min, r_max = bounds
    return (episode_return - r_min) / (r_max - r_min)
