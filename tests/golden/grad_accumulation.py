"""Gradient accumulation with AMP and clipping; correct."""
import torch
import torch.nn as nn
from torch.nn.utils import clip_grad_norm_


def train(model, loader, optimizer, scheduler, accum_steps=4, device="cuda"):
    scaler = torch.amp.GradScaler("cuda")
    criterion = nn.CrossEntropyLoss()
    model.train()
    optimizer.zero_grad(set_to_none=True)
    for i, (x, y) in enumerate(loader):
        x, y = x.to(device), y.to(device)
        with torch.autocast(device_type="cuda", dtype=torch.float16):
            loss = criterion(model(x), y) / accum_steps
        scaler.scale(loss).backward()
        if (i + 1) % accum_steps == 0:
            scaler.unscale_(optimizer)
            clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
