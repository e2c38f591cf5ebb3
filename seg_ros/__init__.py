"""seg_ros: real-time semantic segmentation for ROS 2 cameras."""
import os

__version__ = '0.1.0'

# torch's CPU build runs its intra-op threads on OpenMP, whose default lets idle threads spin.
# On a robot the cores are shared with the camera driver, the ROS executor and other nodes,
# and spinning threads fight them: regseg48 at 128x256 on 2 threads of a loaded 2-core
# machine took 346 ms per frame with spinning and 209 ms without (1 thread: 132 ms). ONNX
# Runtime is configured the same way (allow_spinning=0). This must be set before torch
# loads OpenMP, hence here; a user's own OMP_WAIT_POLICY wins.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
