"""actionrepro: reproduce and compare video action-recognition networks on UCF101 and HMDB51."""

__version__ = "0.1.0"
