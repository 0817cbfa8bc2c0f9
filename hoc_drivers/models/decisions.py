"""Decision records, policy decisions and the CARE kill switch (decisions)."""

MODELS = []
