"""carthema.fitting"""
