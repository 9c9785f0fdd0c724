"""vnflab: grader"""
