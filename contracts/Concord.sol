// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {ConcordStorage} from "./ConcordStorage.sol";
import {ConcordSettlement} from "./ConcordSettlement.sol";
import {ConcordSeed} from "./ConcordSeed.sol";
import {Balances} from "./Balances.sol";
import {NodeRegistry} from "./NodeRegistry.sol";
import {TaskBook} from "./TaskBook.sol";
import {Rounds} from "./Rounds.sol";

/// @title Concord
/// @notice The deployed protocol contract: node registry, task book, round pipeline and pull
///         payments over one ERC-20. It has no owner and no admin function: stakes and escrow
///         move only by the rules in `Rounds`, `ConcordSettlement`, `ConcordSeed` and
///         `NodeRegistry`.
/// @dev One contract holds every token, so the conservation invariant is
///      `token.balanceOf(this) == totalLiabilities()` (burned stake has left it). The modules
///      sit side by side on the one storage layout (`ConcordStorage`) and the round clock
///      (`Pipeline`), none above another. Two modules run by delegatecall on this storage:
///      `ConcordSettlement` (task creation, join/leave, finalize) and `ConcordSeed` (seed
///      shares, the check seed, flags). They exist because the protocol does not fit one
///      contract's 24 KiB, nor one creation's 48 KiB of initcode, so they are deployed first
///      and named to the constructor; their addresses are immutable, so no one can swap the
///      code afterwards (whoever deploys picks the modules: check their code against the
///      published artifacts before trusting a deployment).
contract Concord is Balances, NodeRegistry, TaskBook, Rounds {
    // ---------------------------------------------------------------------------------------
    // Storage
    // ---------------------------------------------------------------------------------------

    /// @dev The settlement module, fixed for life.
    address internal immutable _settlement;
    /// @dev The seed module, fixed for life.
    address internal immutable _seed;

    // ---------------------------------------------------------------------------------------
    // Constructor
    // ---------------------------------------------------------------------------------------

    /// @param token_ The protocol ERC-20 (stakes, escrow, rewards). Must be a plain token.
    /// @param unbondDelay_ Seconds between requestUnbond and completeUnbond.
    /// @param settlement_ A `ConcordSettlement` deployed for the same token.
    /// @param seed_ A `ConcordSeed` deployed for the same token.
    constructor(IERC20 token_, uint256 unbondDelay_, ConcordSettlement settlement_, ConcordSeed seed_)
        ConcordStorage(token_)
        NodeRegistry(unbondDelay_)
    {
        _settlement = address(settlement_);
        _seed = address(seed_);
    }

    // ---------------------------------------------------------------------------------------
    // Fallback
    // ---------------------------------------------------------------------------------------

    /// @dev The seed module's views, reached only through `_seedView`: this contract calls
    ///      itself (a static call, so nothing can be written) with selector 0x00000000 followed
    ///      by the view's calldata, and the module's answer comes back as is. Any other call
    ///      with an unknown selector reverts without data, as it would without a fallback.
    fallback() external {
        if (msg.sender != address(this) || bytes4(msg.data) != bytes4(0)) revert();
        (bool ok, bytes memory ret) = _seed.delegatecall(msg.data[4:]);
        assembly ("memory-safe") {
            if iszero(ok) { revert(add(ret, 0x20), mload(ret)) }
            return(add(ret, 0x20), mload(ret))
        }
    }

    // ---------------------------------------------------------------------------------------
    // Internal
    // ---------------------------------------------------------------------------------------

    /// @dev Run the current call's function (same selector and arguments) in the settlement
    ///      module on this contract's storage; bubble up its revert data unchanged (custom
    ///      errors arrive as if raised here).
    function _delegate() internal override(NodeRegistry, TaskBook, Rounds) returns (bytes memory ret) {
        return _delegateTo(_settlement);
    }

    /// @dev The same in the seed module.
    function _delegateSeed() internal override returns (bytes memory ret) {
        return _delegateTo(_seed);
    }

    function _delegateTo(address module) private returns (bytes memory ret) {
        bool ok;
        (ok, ret) = module.delegatecall(msg.data);
        if (!ok) {
            assembly ("memory-safe") {
                revert(add(ret, 0x20), mload(ret))
            }
        }
    }

    /// @dev Static self-call into the fallback above; reverts with its revert data.
    function _seedView() internal view override returns (bytes memory ret) {
        bool ok;
        (ok, ret) = address(this).staticcall(abi.encodePacked(bytes4(0), msg.data));
        if (!ok) {
            assembly ("memory-safe") {
                revert(add(ret, 0x20), mload(ret))
            }
        }
    }
}
