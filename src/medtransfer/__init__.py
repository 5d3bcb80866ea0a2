"""medtransfer: which transfer-learning recipe should I use on my small medical dataset?"""
__version__ = "0.1.0"
