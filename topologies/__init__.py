"""vnflab: topologies"""
