# Copyright (c) lmclip_mm authors.
