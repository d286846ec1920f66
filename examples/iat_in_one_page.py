"""Interpolated Adversarial Training with Mixup (Lamb et al. 2019, Algorithm 1) on one page, in plain PyTorch.

This is the page to check the paper against: `iat train --method iat-mixup` trains bit-identical weights on a
CPU (tests/test_one_page.py), through the same arithmetic spread over iat's modules. The model is any network
taking images in [0,1] (normalization inside it); the data are float images in [0,1] and int64 labels.
`iat_step` is also the plain PyTorch loop that benchmarks/ time iat against.
"""

import torch
import torch.nn.functional as F


def mixup_loss(model, x, y, alpha):
    """Loss(f, Mix, x, y): lambda ~ Beta(alpha, alpha), mix the batch with a shuffled copy, mixed cross-entropy."""
    lam = torch.distributions.Beta(torch.tensor(alpha), torch.tensor(alpha), validate_args=False).sample()
    torch.randint(1, ())  # iat draws Mixup's layer as Manifold Mixup does; at the input there is one to draw
    perm = torch.randperm(len(x), device=x.device)
    logits = model(lam * x + (1 - lam) * x[perm])
    return (lam * F.cross_entropy(logits, y, reduction="none")
            + (1 - lam) * F.cross_entropy(logits, y[perm], reduction="none")).mean()


def pgd(model, x, y, eps, step_size, steps, param_grads=False):
    """L-inf PGD from a uniform start, on the model in eval mode, with input gradients only; `param_grads`
    computes the parameters' gradients too and drops them, as locuslab's train_pgd.py (loss.backward()) does."""
    model.eval()
    project = lambda z: torch.min(torch.max(z, x - eps), x + eps).clamp(0, 1).detach()  # noqa: E731
    x_adv = project(x + torch.empty_like(x).uniform_(-eps, eps))
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y, reduction="sum")
        grad = torch.autograd.grad(loss, [x_adv, *model.parameters()] if param_grads else [x_adv])[0]
        x_adv = project(x_adv.detach() + step_size * grad.sign())
    model.train()
    return x_adv


def iat_step(model, optimizer, x, y, *, eps, step_size, steps, alpha=1.0, attack_param_grads=False):
    """One update of Algorithm 1 on the batch (x, y)."""
    loss_clean = mixup_loss(model, x, y, alpha)                        # L_c = Loss(f, Mix, x, y)
    model.requires_grad_(attack_param_grads)                           # the attack needs input gradients only
    x_adv = pgd(model, x, y, eps, step_size, steps, attack_param_grads)  # x~ = attack(x, y)
    model.requires_grad_(True)
    loss = (loss_clean + mixup_loss(model, x_adv, y, alpha)) / 2       # L = (L_c + L_a) / 2
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def train(make_model, x_train, y_train, *, seed=0, epochs=2, batch_size=64, lr=0.1, milestones=(), gamma=0.1,
          momentum=0.9, weight_decay=1e-4, eps=0.1, step_size=0.025, steps=3, alpha=1.0):
    torch.manual_seed(seed)
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    for epoch in range(epochs):
        for group in opt.param_groups:
            group["lr"] = lr * gamma ** sum(epoch >= m for m in milestones)
        order = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        for idx in order.split(batch_size):  # (the caller picks sizes that leave no last batch of one)
            iat_step(model, opt, x_train[idx], y_train[idx], eps=eps, step_size=step_size, steps=steps, alpha=alpha)
    return model
