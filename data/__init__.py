"""carthema.data"""
