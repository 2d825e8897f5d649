"""MaskLab's Keras model: atrous ResNet backbone, RPN, box and mask heads."""
