"""Models, degradations, training engine and metrics of the MNIST diffusion study.

Kept free of imports so that `import helpers` is cheap; import the submodules you need.
"""
