"""Deploy a student: export it to ONNX (or TorchScript) and act with onnxruntime alone, no SB3.

    python examples/export_and_infer.py                     # distils a CartPole student first
    python examples/export_and_infer.py --student runs/demo/student.zip

The same from the shell: ``sb3-distill export runs/demo/student.zip --format onnx``.
"""

from __future__ import annotations

import argparse
import os

import gymnasium as gym
import numpy as np


def make_student(output: str, timesteps: int) -> str:
    """A CartPole student to export (any student file works)."""
    from stable_baselines3 import PPO

    from sb3_distill import RealTimeDistillCallback, save_student

    teacher = PPO("MlpPolicy", "CartPole-v1", n_steps=256, seed=0)
    distill = RealTimeDistillCallback(student="MlpPolicy", student_kwargs={"net_arch": [8]}, seed=0)
    teacher.learn(timesteps, callback=distill)
    path = os.path.join(output, "student.zip")
    save_student(distill.student, path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student", help="student file to export (default: distil a CartPole one first)")
    parser.add_argument("--timesteps", type=int, default=50_000, help="teacher budget when distilling one first")
    parser.add_argument("--format", choices=["onnx", "torchscript"], default="onnx")
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--output", default="runs/export", help="folder for the exported file")
    args = parser.parse_args()
    os.makedirs(args.output, exist_ok=True)

    from sb3_distill import export

    student_path = args.student or make_student(args.output, args.timesteps)
    exported = export(
        student_path,
        os.path.join(args.output, f"student.{'onnx' if args.format == 'onnx' else 'pt'}"),
        format=args.format,
    )
    print(f"exported {student_path} -> {exported} ({os.path.getsize(exported):,} bytes)")

    # Deployment side: gymnasium and the runtime only.
    if args.format == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(exported))

        def act(obs: np.ndarray) -> np.ndarray:
            return session.run(["actions"], {"obs": obs[None].astype(np.float32)})[0]
    else:
        import torch

        module = torch.jit.load(str(exported))

        def act(obs: np.ndarray) -> np.ndarray:
            return module(torch.as_tensor(obs[None], dtype=torch.float32)).numpy()

    env = gym.make("CartPole-v1")
    for episode in range(args.episodes):
        obs, _ = env.reset(seed=episode)
        total, done = 0.0, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(int(act(obs)[0]))
            total += float(reward)
            done = terminated or truncated
        print(f"episode {episode}: return {total:.0f}")


if __name__ == "__main__":
    main()
