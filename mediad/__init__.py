"""mediad: the daemon that makes an archive's media permanent."""

__version__ = "0.1.0"
