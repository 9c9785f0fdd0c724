"""vnflab: vnf"""
