"""vnflab: vnflab"""
