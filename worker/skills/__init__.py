"""An agent's skills, from their references to files in the sandbox: `installer` resolves and
writes them, `cache` keeps unpacked trees by version hash, `archive` unpacks a zip safely."""
