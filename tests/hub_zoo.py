"""keras_hub CNN models built from small explicit configs (no presets, no network).

Each builder returns a built model; ``HUB_MODELS`` maps a name to a zero-argument builder.
"""

from __future__ import annotations

import keras

SIZE = 32


def _hub():
    import keras_hub

    return keras_hub.models


def resnet(block_type="basic_block", pre=False, name="resnet"):
    return _hub().ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[3],
        stackwise_num_filters=[64, 16],
        stackwise_num_blocks=[1, 1],
        stackwise_num_strides=[1, 2],
        block_type=block_type,
        use_pre_activation=pre,
        image_shape=(SIZE, SIZE, 3),
        name=name,
    )


def resnet_vd():
    return _hub().ResNetBackbone(
        input_conv_filters=[8, 8, 8],
        input_conv_kernel_sizes=[3, 3, 3],
        stackwise_num_filters=[64, 16],
        stackwise_num_blocks=[1, 1],
        stackwise_num_strides=[1, 2],
        block_type="bottleneck_block_vd",
        image_shape=(SIZE, SIZE, 3),
        name="resnet_vd",
    )


def mobilenetv3():
    return _hub().MobileNetBackbone(
        stackwise_expansion=[[16, 24], [32]],
        stackwise_num_blocks=[2, 1],
        stackwise_num_filters=[[8, 8], [16]],
        stackwise_kernel_size=[[3, 3], [5]],
        stackwise_num_strides=[[2, 1], [2]],
        stackwise_se_ratio=[[None, 0.25], [0.25]],
        stackwise_activation=[["relu", "relu"], ["hard_swish"]],
        stackwise_padding=[[1, 1], [2]],
        output_num_filters=32,
        depthwise_filters=8,
        depthwise_stride=2,
        depthwise_residual=False,
        last_layer_filter=32,
        squeeze_and_excite=0.5,
        image_shape=(SIZE, SIZE, 3),
        input_activation="hard_swish",
        output_activation="hard_swish",
        input_num_filters=8,
        name="mobilenetv3",
    )


def _efficientnet(block_types, name):
    return _hub().EfficientNetBackbone(
        stackwise_width_coefficients=[1.0] * 3,
        stackwise_depth_coefficients=[1.0] * 3,
        stackwise_kernel_sizes=[3, 3, 3],
        stackwise_num_repeats=[1, 2, 1],
        stackwise_input_filters=[8, 8, 16],
        stackwise_output_filters=[8, 16, 16],
        stackwise_expansion_ratios=[1, 4, 4],
        stackwise_squeeze_and_excite_ratios=[0.0, 0.25, 0.25],
        stackwise_strides=[1, 2, 1],
        stackwise_block_types=block_types,
        stackwise_force_input_filters=[0] * 3,
        stackwise_nores_option=[False] * 3,
        input_shape=(SIZE, SIZE, 3),
        num_features=32,
        min_depth=4,
        depth_divisor=4,
        name=name,
    )


def efficientnet_v1():
    return _efficientnet(["v1", "v1", "v1"], "efficientnet_v1")


def efficientnet_v2():
    return _efficientnet(["fused", "fused", "unfused"], "efficientnet_v2")


def densenet():
    return _hub().DenseNetBackbone(
        stackwise_num_repeats=[2, 2], image_shape=(SIZE, SIZE, 3), growth_rate=4,
        name="densenet",
    )  # fmt: skip


def cspdarknet():
    return _hub().CSPNetBackbone(
        stem_filters=8, stem_kernel_size=3, stem_strides=2, stackwise_depth=[1, 1],
        stackwise_strides=[2, 2], stackwise_num_filters=[16, 32], block_type="dark_block",
        stage_type="csp", expand_ratio=[2.0], bottle_ratio=[0.5], down_growth=True,
        image_shape=(SIZE, SIZE, 3), name="cspdarknet",
    )  # fmt: skip


def cspnet(stage_type="cs3", groups=1, name="cspnet_cs3"):
    """Cross-stage bottleneck stages; ``groups=2`` makes the 3x3 convs grouped."""
    return _hub().CSPNetBackbone(
        stem_filters=8, stem_kernel_size=3, stem_strides=2, stackwise_depth=[1, 2],
        stackwise_strides=[2, 2], stackwise_num_filters=[16, 32], block_type="bottleneck_block",
        stage_type=stage_type, groups=groups, expand_ratio=[2.0], bottle_ratio=[0.5],
        down_growth=stage_type == "csp", image_shape=(SIZE, SIZE, 3), name=name,
    )  # fmt: skip


def xception():
    return _hub().XceptionBackbone(
        stackwise_conv_filters=[[8, 16], [32, 32], [48, 48], [64, 64]],
        stackwise_pooling=[False, True, True, False],
        image_shape=(SIZE, SIZE, 3),
        name="xception",
    )


def vgg():
    return _hub().VGGBackbone(
        stackwise_num_repeats=[1, 2], stackwise_num_filters=[64, 16],
        image_shape=(SIZE, SIZE, 3), name="vgg",
    )  # fmt: skip


def hgnetv2():
    return _hub().HGNetV2Backbone(
        depths=[1, 1], embedding_size=8, hidden_sizes=[16, 32], stem_channels=[3, 8, 8],
        hidden_act="relu", use_learnable_affine_block=True,
        stackwise_stage_filters=[(8, 8, 16, 1, 2, 3), (16, 8, 32, 1, 2, 3)],
        apply_downsample=[False, True], use_lightweight_conv_block=[False, True],
        image_shape=(SIZE, SIZE, 3), name="hgnetv2",
    )  # fmt: skip


def _encoder():
    return _hub().ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64, 8, 16, 16],
        stackwise_num_blocks=[1, 1, 1, 1], stackwise_num_strides=[1, 2, 2, 2],
        block_type="basic_block", image_shape=(None, None, 3),
    )  # fmt: skip


def deeplabv3():
    return _hub().DeepLabV3Backbone(
        image_encoder=_encoder(), spatial_pyramid_pooling_key="P4", upsampling_size=4,
        dilation_rates=[1, 2], low_level_feature_key="P2", projection_filters=8,
        image_shape=(SIZE, SIZE, 3), name="deeplabv3",
    )  # fmt: skip


def basnet():
    return _hub().BASNetBackbone(
        image_encoder=_encoder(), num_classes=1, image_shape=(SIZE, SIZE, 3),
        projection_filters=64, name="basnet",
    )  # fmt: skip


def image_classifier(backbone_fn=resnet):
    return _hub().ImageClassifier(backbone=backbone_fn(), num_classes=3, name="classifier")


def image_segmenter():
    return _hub().DeepLabV3ImageSegmenter(backbone=deeplabv3(), num_classes=2, name="segmenter")


HUB_MODELS = {
    "resnet_v1": resnet,
    "resnet_v2": lambda: resnet("basic_block", True, "resnet_v2"),
    "resnet_vd": resnet_vd,
    "resnet_bottleneck": lambda: resnet("bottleneck_block", False, "resnet_bottleneck"),
    "mobilenetv3": mobilenetv3,
    "efficientnet_v1": efficientnet_v1,
    "efficientnet_v2": efficientnet_v2,
    "densenet": densenet,
    "cspdarknet": cspdarknet,
    "cspnet_cs3": cspnet,
    "cspnet_grouped": lambda: cspnet("csp", 2, "cspnet_grouped"),
    "xception": xception,
    "vgg": vgg,
    "hgnetv2": hgnetv2,
    "deeplabv3": deeplabv3,
    "basnet": basnet,
    "classifier_resnet": image_classifier,
    "classifier_mobilenetv3": lambda: image_classifier(mobilenetv3),
    "segmenter_deeplabv3": image_segmenter,
}


def build(name: str) -> keras.Model:
    return HUB_MODELS[name]()
