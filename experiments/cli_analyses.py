def register(sub):
    return None
