"""Custom algorithms, selected by file name: `algorithm.name: my_algo` loads `algorithms/my_algo.py`.

The file defines `ALGORITHM`, an RLlib AlgorithmConfig subclass (new API stack). PPO, APPO and
IMPALA need no file. One outside this package is named `package.module:ConfigClass`.
"""
