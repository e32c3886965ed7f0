"""procgen-rl: train RLlib agents on OpenAI Procgen, the same way on a laptop and on SageMaker."""

__version__ = "0.1.0"
