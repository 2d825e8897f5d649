"""Box conventions shared by the box classifier's targets and its decoding.

Boxes everywhere in the project are continuous [ymin, xmin, ymax, xmax] in
image pixels (a COCO bbox runs from pixel edge to pixel edge). The box
classifier's deltas are encoded with Faster R-CNN's weights (TF Object
Detection API's FasterRcnnBoxCoder), by Model Garden's `box_ops`: the loss
encodes with them and post-processing decodes with them, so they live here,
below both.
"""

BOX_CODER_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
