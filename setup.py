"""ament_python build for seg_ros; also `pip install -e .` in a venv without ROS."""
from glob import glob
import os

from setuptools import find_packages, setup

PACKAGE = 'seg_ros'


def _files(pattern: str) -> list[str]:
    return [p for p in glob(pattern, recursive=True) if os.path.isfile(p)]


def _tree(folder: str) -> list[tuple[str, list[str]]]:
    """data_files entries that install `folder` under share/seg_ros keeping sub-folders."""
    entries: dict[str, list[str]] = {}
    for path in _files(os.path.join(folder, '**', '*')):
        dest = os.path.join('share', PACKAGE, os.path.dirname(path))
        entries.setdefault(dest, []).append(path)
    return sorted(entries.items())


setup(
    name=PACKAGE,
    version='0.1.0',
    packages=find_packages(exclude=['test', 'test.*']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + PACKAGE]),
        ('share/' + PACKAGE, ['package.xml']),
        *_tree('launch'),
        *_tree('config'),
        *_tree('models'),
    ],
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='seg_ros developers',
    maintainer_email='seg-ros@example.com',
    description='Real-time semantic segmentation for ROS 2 cameras.',
    license='Apache-2.0',
    # setuptools >= 72 dropped tests_require: colcon test finds pytest through this extra
    extras_require={'test': ['pytest']},
    entry_points={
        'console_scripts': [
            'seg-ros = seg_ros.cli:main',
            'segmentation_node = seg_ros.ros.node:main',
            'segmentation_lifecycle_node = seg_ros.ros.lifecycle_node:main',
            'multi_camera_segmentation_node = seg_ros.ros.multicam_node:main',
            'multi_camera_segmentation_lifecycle_node = seg_ros.ros.multicam_lifecycle_node:main',
        ],
    },
)
