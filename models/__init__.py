"""carthema.models"""
