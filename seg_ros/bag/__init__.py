"""Rosbag tools: score models on recorded drives, offline and through the live node.

Modules (imported on use, so ``import seg_ros.bag`` stays cheap):

* :mod:`seg_ros.bag.io` -- bag reading (ROS 1, rosbag2 sqlite3 / MCAP of every era) and
  rosbag2 writing on ``rosbags``; :class:`~seg_ros.bag.io.BagReader`,
  :class:`~seg_ros.bag.io.BagWriter`, clear errors.
* :mod:`seg_ros.bag.forms` -- which form a bag has; ROS 1 -> CDR, ``pkg/Name`` types,
  compressed payloads.
* :mod:`seg_ros.bag.salvage` -- reading what is left of a truncated bag.
* :mod:`seg_ros.bag.labels` -- label topics and label PNG folders, matched by stamp or name.
* :mod:`seg_ros.bag.make_bag` -- ``seg-ros make-bag`` (also ``--from-bag``).
* :mod:`seg_ros.bag.extract` -- ``seg-ros extract-frames``.
* :mod:`seg_ros.bag.eval_bag` -- ``seg-ros eval-bag`` offline, and the shared report assembly.
* :mod:`seg_ros.bag.live` / :mod:`seg_ros.bag.player` -- live mode: node + player processes.
* :mod:`seg_ros.bag.report` -- report.json / report.md / plots / overlay strip.
* :mod:`seg_ros.bag.commands` -- the CLI glue.
"""
