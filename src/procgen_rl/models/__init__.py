"""Models, selected by file name: `custom_model: impala_cnn` loads `models/impala_cnn.py`.

To add one, drop `models/<name>.py` here defining `MODEL`, an RLlib TorchRLModule subclass that
implements ValueFunctionAPI (PPO, APPO, IMPALA need values) and TargetNetworkAPI (APPO needs
targets), and whose `_forward_exploration` returns `Columns.VF_PREDS` (PPO's clipped value loss
needs the values predicted at sampling). It receives `custom_model_config` as its `model_config`
and uint8 frames (N, C, 64, 64). A model outside this package is named `package.module:ClassName`.
"""
