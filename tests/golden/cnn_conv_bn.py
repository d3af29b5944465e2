"""A small CNN: one Conv+BN pair keeps its redundant bias, and a view merges axes a transpose reversed."""
import torch
import torch.nn as nn
import torch.nn.functional as F


class ConvNet(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(32)
        self.features = nn.Sequential(
            nn.Conv2d(32, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
        )
        self.head = nn.Linear(32, num_classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.conv2(x)
        x = F.relu(self.bn2(x))
        x = self.features(x)
        x = x.transpose(1, 3)  # (N, W, H, C): the spatial axes now run in reverse order
        x = x.view(x.size(0), -1, 32).mean(1)
        return self.head(x)
