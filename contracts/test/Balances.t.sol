// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Test} from "forge-std/Test.sol";
import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {Concord} from "../Concord.sol";
import {deployConcord} from "./utils/DeployConcord.sol";
import {IConcord} from "../interfaces/IConcord.sol";
import {IConcordErrors} from "../interfaces/IConcordErrors.sol";
import {IConcordTypes} from "../interfaces/IConcordTypes.sol";

/// @dev A token that calls back into Concord during transfers, to prove the guard holds.
contract ReentrantToken is ERC20 {
    Concord public target;
    bytes public payload;

    constructor() ERC20("Reentrant", "RE") {}

    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    function arm(Concord target_, bytes calldata payload_) external {
        target = target_;
        payload = payload_;
    }

    function _update(address from, address to, uint256 value) internal override {
        super._update(from, to, value);
        if (address(target) != address(0) && payload.length != 0) {
            bytes memory p = payload;
            delete payload;
            (bool ok, bytes memory ret) = address(target).call(p);
            if (!ok) {
                assembly ("memory-safe") {
                    revert(add(ret, 0x20), mload(ret))
                }
            }
        }
    }
}

/// @notice Pull payments: balances leave only by withdraw, once, under a reentrancy guard.
contract BalancesTest is Test {
    ReentrantToken internal token;
    Concord internal concord;
    address internal alice = makeAddr("alice");

    function setUp() public {
        token = new ReentrantToken();
        concord = deployConcord(IERC20(address(token)), 0);
        token.mint(alice, 100e18);
        vm.startPrank(alice);
        token.approve(address(concord), type(uint256).max);
        concord.register(IConcordTypes.Role.Trainer, 10e18);
        concord.requestUnbond(10e18);
        concord.completeUnbond();
        vm.stopPrank();
    }

    function test_WithdrawPaysOnceAndReducesBalance() public {
        vm.startPrank(alice);
        concord.withdraw(4e18);
        assertEq(concord.balanceOf(alice), 6e18);
        assertEq(token.balanceOf(alice), 94e18);
        concord.withdraw(6e18);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.InsufficientBalance.selector, alice, 0, 1));
        concord.withdraw(1);
        assertEq(token.balanceOf(alice), 100e18);
        assertEq(token.balanceOf(address(concord)), concord.totalLiabilities());
    }

    function test_RevertWhen_WithdrawReentersThroughToken() public {
        token.arm(concord, abi.encodeCall(IConcord.withdraw, (1e18)));
        vm.prank(alice);
        vm.expectRevert(ReentrancyGuardTransient.ReentrancyGuardReentrantCall.selector);
        concord.withdraw(1e18);
        assertEq(concord.balanceOf(alice), 10e18);
    }

    function test_RevertWhen_RegisterReentersThroughToken() public {
        address bob = makeAddr("bob");
        token.mint(bob, 10e18);
        vm.prank(bob);
        token.approve(address(concord), type(uint256).max);
        token.arm(concord, abi.encodeCall(IConcord.addStake, (1e18)));
        vm.prank(bob);
        vm.expectRevert(ReentrancyGuardTransient.ReentrancyGuardReentrantCall.selector);
        concord.register(IConcordTypes.Role.Validator, 1e18);
    }

    function testFuzz_WithdrawNeverExceedsBalance(uint256 amount) public {
        vm.prank(alice);
        if (amount == 0) {
            vm.expectRevert(IConcordErrors.ZeroAmount.selector);
        } else if (amount > 10e18) {
            vm.expectRevert(abi.encodeWithSelector(IConcordErrors.InsufficientBalance.selector, alice, 10e18, amount));
        }
        concord.withdraw(amount);
        assertEq(token.balanceOf(address(concord)), concord.totalLiabilities());
    }
}
