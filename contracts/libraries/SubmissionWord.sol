// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

/// @title SubmissionWord
/// @notice The one storage word a submission takes:
///         trainer (bits 0..159) | baseRound (160..191) | workUnits (192..255).
/// @dev bundleDigest and proofRoot are not stored: the `Submitted` event is their record.
library SubmissionWord {
    function pack(address trainer_, uint32 baseRound_, uint64 workUnits_) internal pure returns (uint256) {
        return uint256(uint160(trainer_)) | (uint256(baseRound_) << 160) | (uint256(workUnits_) << 192);
    }

    function trainer(uint256 word) internal pure returns (address) {
        return address(uint160(word));
    }

    function baseRound(uint256 word) internal pure returns (uint32) {
        return uint32(word >> 160);
    }

    function workUnits(uint256 word) internal pure returns (uint64) {
        return uint64(word >> 192);
    }
}
