"""The motion corpus: real mocap clips retargeted and augmented (``mocap``, ``corpus``), their
captions (``captions``), the HumanML3D-layout loader (``dataset``) and the frozen caption
encoder (``text``)."""
