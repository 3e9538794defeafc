"""diffgemma.runtime.api: the wire layer front ends import (protocol, client, paths, typed errors). Torch-free."""
